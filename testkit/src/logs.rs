//! Tails of the control-plane component logs (`.local/logs/*.log`), printed when a test fails.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The log directory of the cluster [`crate::cluster()`] attached to, once it has; kept here so
/// that `wait` can print the logs on a timeout without depending on `cluster`.
static CLUSTER_LOG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Records the attached cluster's log directory (the first one recorded stays: there is one
/// cluster per process).
pub(crate) fn remember_cluster_log_dir(log_dir: &Path) {
    if CLUSTER_LOG_DIR.get().is_none() {
        let _ = CLUSTER_LOG_DIR.set(log_dir.to_owned());
    }
}

/// The attached cluster's log directory, if [`crate::cluster()`] has succeeded in this process.
pub(crate) fn cluster_log_dir() -> Option<&'static Path> {
    CLUSTER_LOG_DIR.get().map(PathBuf::as_path)
}

/// Bytes read from the end of each log; enough for the requested lines of ordinary log output.
const TAIL_BYTES: u64 = 256 * 1024;
const DEFAULT_LINES: usize = 40;

/// Prints the last lines (`DBOP_LOG_TAIL_LINES`, default 40) of every `*.log` file in `log_dir`
/// to stderr, one section per component. Components started by other parts of the project
/// (webhook, reconciler) are included when they log into the same directory.
pub fn dump_logs(log_dir: &Path) {
    let lines = std::env::var("DBOP_LOG_TAIL_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LINES);
    let mut logs: Vec<_> = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
            .collect(),
        Err(e) => {
            eprintln!("testkit: no component logs in {}: {e}", log_dir.display());
            return;
        }
    };
    logs.sort();
    for path in logs {
        match tail(&path, lines) {
            Ok(text) => eprintln!(
                "----- testkit: last {lines} lines of {} -----\n{text}",
                path.display()
            ),
            Err(e) => eprintln!("testkit: cannot read {}: {e}", path.display()),
        }
    }
}

/// The last `lines` lines of a file, reading at most [`TAIL_BYTES`] from its end.
pub(crate) fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::tail;
    use std::io::Write;

    #[test]
    fn tail_returns_only_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("testkit-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..100 {
            writeln!(f, "line {i}").unwrap();
        }
        assert_eq!(tail(&path, 2).unwrap(), "line 98\nline 99");
        assert_eq!(tail(&path, 1000).unwrap().lines().count(), 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
