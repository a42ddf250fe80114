//! Rules for `spec.config`: key syntax, operator-owned keys, and type/range checks for the
//! parameters the operator knows. Unknown parameters pass with a warning.
//!
//! Keys are lowercase (both engines treat parameter names case-insensitively, and a single
//! spelling keeps `Port` from slipping past the owned-key check). MySQL treats `-` and `_` alike
//! and accepts a `loose_` prefix, so owned and known MySQL keys are matched after normalising both.

use crate::quantity;
use crate::v1::Engine;

/// Most entries `spec.config` may have (also enforced by the CRD's `maxProperties`).
pub const MAX_CONFIG_KEYS: usize = 20;
/// Longest key.
pub const MAX_KEY_LEN: usize = 63;
/// Longest value.
pub const MAX_VALUE_LEN: usize = 1024;

/// Parameters the operator sets itself; users may not override them.
pub fn owned_keys(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Postgres => &[
            "config_file",
            "data_directory",
            "external_pid_file",
            "hba_file",
            "ident_file",
            "listen_addresses",
            "port",
            "unix_socket_directories",
            "unix_socket_group",
            "unix_socket_permissions",
        ],
        Engine::Mysql => &[
            "admin_address",
            "admin_port",
            "basedir",
            "bind_address",
            "datadir",
            "mysqlx_bind_address",
            "mysqlx_port",
            "mysqlx_socket",
            "pid_file",
            "port",
            "server_id",
            "skip_networking",
            "socket",
            "user",
        ],
    }
}

/// The type of a known parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// Integer within the range.
    Int(i64, i64),
    /// Real number within the range.
    Real(f64, f64),
    /// Boolean in the engine's spelling.
    Bool,
    /// Memory size in the engine's syntax, within a byte range. The first field is the unit a
    /// plain number is counted in (PostgreSQL: 8kB blocks for shared_buffers, kB for work_mem,
    /// MB for max_wal_size; MySQL: bytes).
    Memory(u128, u128, u128),
    /// Like `Memory`, but `-1` (automatic) is also accepted.
    MemoryOrAuto(u128, u128, u128),
    /// PostgreSQL time (`250ms`, `30s`, `5min`, plain number in the parameter's unit), or -1/0.
    PgTime,
    /// One of the listed words (case-insensitive).
    Enum(&'static [&'static str]),
}

const KIB: u128 = 1024;
const MIB: u128 = 1024 * KIB;
const GIB: u128 = 1024 * MIB;
const TIB: u128 = 1024 * GIB;

/// Parameters the operator checks; anything else is passed through with a warning.
pub fn known_params(engine: Engine) -> &'static [(&'static str, ParamType)] {
    use ParamType::*;
    match engine {
        Engine::Postgres => &[
            ("checkpoint_completion_target", Real(0.0, 1.0)),
            ("effective_cache_size", Memory(8 * KIB, 8 * KIB, 16 * TIB)),
            ("effective_io_concurrency", Int(0, 1000)),
            ("idle_in_transaction_session_timeout", PgTime),
            ("log_min_duration_statement", PgTime),
            ("log_statement", Enum(&["none", "ddl", "mod", "all"])),
            ("maintenance_work_mem", Memory(KIB, MIB, 2 * GIB)),
            ("max_connections", Int(1, 10_000)),
            ("max_parallel_workers", Int(0, 1024)),
            ("max_parallel_workers_per_gather", Int(0, 1024)),
            ("max_wal_size", Memory(MIB, 2 * MIB, TIB)),
            ("max_worker_processes", Int(0, 262_143)),
            ("min_wal_size", Memory(MIB, 2 * MIB, TIB)),
            ("random_page_cost", Real(0.0, 1.0e10)),
            ("shared_buffers", Memory(8 * KIB, 128 * KIB, TIB)),
            ("statement_timeout", PgTime),
            (
                "synchronous_commit",
                Enum(&["on", "off", "local", "remote_write", "remote_apply"]),
            ),
            ("wal_buffers", MemoryOrAuto(8 * KIB, 32 * KIB, GIB)),
            ("work_mem", Memory(KIB, 64 * KIB, 2 * GIB)),
        ],
        Engine::Mysql => &[
            ("innodb_buffer_pool_size", Memory(1, 5 * MIB, 64 * TIB)),
            ("innodb_flush_log_at_trx_commit", Int(0, 2)),
            ("innodb_log_file_size", Memory(1, 4 * MIB, 512 * GIB)),
            ("innodb_redo_log_capacity", Memory(1, 8 * MIB, 128 * GIB)),
            ("long_query_time", Real(0.0, 31_536_000.0)),
            ("max_allowed_packet", Memory(1, KIB, GIB)),
            ("max_connections", Int(1, 100_000)),
            ("max_heap_table_size", Memory(1, 16 * KIB, TIB)),
            ("slow_query_log", Bool),
            ("sync_binlog", Int(0, 4_294_967_295)),
            ("table_open_cache", Int(1, 524_288)),
            ("thread_cache_size", Int(0, 16_384)),
            ("tmp_table_size", Memory(1, KIB, TIB)),
            (
                "transaction_isolation",
                Enum(&[
                    "read-uncommitted",
                    "read-committed",
                    "repeatable-read",
                    "serializable",
                ]),
            ),
            ("wait_timeout", Int(1, 31_536_000)),
        ],
    }
}

/// The name used to match owned/known keys: MySQL ignores `-` vs `_` and a `loose_` prefix.
pub fn canonical_key(engine: Engine, key: &str) -> String {
    match engine {
        Engine::Postgres => key.to_string(),
        Engine::Mysql => {
            let k = key.replace('-', "_");
            k.strip_prefix("loose_").map(str::to_string).unwrap_or(k)
        }
    }
}

/// Checks key syntax. `Err` says what is wrong.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok_chars = key.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-'
    });
    let starts_with_letter = key.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if key.is_empty() || key.len() > MAX_KEY_LEN || !ok_chars || !starts_with_letter {
        return Err(format!(
            "key {key:?} is not a parameter name; use 1-{MAX_KEY_LEN} lowercase letters, digits, '_', '.' or '-', starting with a letter (e.g. max_connections)"
        ));
    }
    Ok(())
}

/// Checks a value for characters that could break out of the rendered configuration file.
pub fn check_value_safe(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "the value is {} bytes long; at most {MAX_VALUE_LEN} are allowed",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(
            "the value contains a line break or another control character; write it on one line"
                .into(),
        );
    }
    Ok(())
}

/// Checks a value against the parameter's type. `Err` says what is expected.
pub fn check_value(engine: Engine, ty: ParamType, value: &str) -> Result<(), String> {
    let v = value.trim();
    match ty {
        ParamType::Int(lo, hi) => match v.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(()),
            Ok(_) => Err(format!("must be between {lo} and {hi}")),
            Err(_) => Err(format!("must be a whole number between {lo} and {hi}")),
        },
        ParamType::Real(lo, hi) => match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= lo && n <= hi => Ok(()),
            _ => Err(format!("must be a number between {lo} and {hi}")),
        },
        ParamType::Bool => {
            let words: &[&str] = match engine {
                Engine::Postgres => &["on", "off", "true", "false", "yes", "no", "1", "0"],
                Engine::Mysql => &["on", "off", "true", "false", "1", "0"],
            };
            if words.iter().any(|w| w.eq_ignore_ascii_case(v)) {
                Ok(())
            } else {
                Err(format!("must be one of {}", words.join(", ")))
            }
        }
        ParamType::Enum(words) => {
            if words.iter().any(|w| w.eq_ignore_ascii_case(v)) {
                Ok(())
            } else {
                Err(format!("must be one of {}", words.join(", ")))
            }
        }
        ParamType::MemoryOrAuto(..) if v == "-1" => Ok(()),
        ParamType::Memory(unit, lo, hi) | ParamType::MemoryOrAuto(unit, lo, hi) => {
            let (bytes, syntax) = match engine {
                Engine::Postgres => (
                    pg_memory_bytes(v, unit),
                    "a size such as 128MB or 1GB (units B, kB, MB, GB, TB)",
                ),
                Engine::Mysql => (
                    mysql_memory_bytes(v),
                    "a size in bytes, optionally with K, M, G or T (e.g. 512M)",
                ),
            };
            match bytes {
                Some(b) if (lo..=hi).contains(&b) => Ok(()),
                Some(_) => Err(format!(
                    "must be between {} and {}",
                    human_bytes(lo),
                    human_bytes(hi)
                )),
                None => Err(format!("must be {syntax}")),
            }
        }
        ParamType::PgTime => {
            if pg_time_ok(v) {
                Ok(())
            } else {
                Err("must be a time such as 250ms, 30s, 5min or 1h, or -1/0 to disable".into())
            }
        }
    }
}

/// PostgreSQL memory: `N` (in the parameter's unit), or `N` with B, kB, MB, GB, TB
/// (case-sensitive).
fn pg_memory_bytes(v: &str, plain_unit: u128) -> Option<u128> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u128 = num.parse().ok()?;
    let mult = match unit.trim_start() {
        "" => plain_unit,
        "B" => 1,
        "kB" => KIB,
        "MB" => MIB,
        "GB" => GIB,
        "TB" => TIB,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// MySQL memory: bytes with an optional K/M/G/T suffix (case-insensitive). Kubernetes-style
/// quantities (`512Mi`) are not MySQL syntax and are rejected with the expected form.
fn mysql_memory_bytes(v: &str) -> Option<u128> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u128 = num.parse().ok()?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => KIB,
        "M" => MIB,
        "G" => GIB,
        "T" => TIB,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn pg_time_ok(v: &str) -> bool {
    if v == "-1" {
        return true;
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    !num.is_empty()
        && num.parse::<u64>().is_ok()
        && matches!(
            unit.trim_start(),
            "" | "us" | "ms" | "s" | "min" | "h" | "d"
        )
}

fn human_bytes(b: u128) -> String {
    for (unit, size) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {unit}", b / size);
        }
    }
    format!("{b} bytes")
}

/// Does the value look like a Kubernetes quantity rather than the engine's syntax? Used to give a
/// pointed hint ("512Mi is Kubernetes syntax; PostgreSQL writes 512MB").
pub fn kubernetes_quantity_hint(engine: Engine, value: &str) -> Option<String> {
    let v = value.trim();
    let unit_pos = v.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = v.split_at(unit_pos);
    if num.is_empty() || quantity::parse(v).is_err() {
        return None;
    }
    let mapped = match (engine, unit) {
        (Engine::Postgres, "Ki") => "kB",
        (Engine::Postgres, "Mi") => "MB",
        (Engine::Postgres, "Gi") => "GB",
        (Engine::Postgres, "Ti") => "TB",
        (Engine::Mysql, "Ki") => "K",
        (Engine::Mysql, "Mi") => "M",
        (Engine::Mysql, "Gi") => "G",
        (Engine::Mysql, "Ti") => "T",
        _ => return None,
    };
    Some(format!("{v} is Kubernetes syntax; write {num}{mapped}"))
}
