//! Rules for `spec.config`: key syntax, operator-owned keys, parameters no user may set, and
//! type/range checks for the parameters the operator knows (an allowlist).
//!
//! The order of the checks is: syntax, operator-owned ([`owned_keys`]), forbidden
//! ([`forbidden`]: parameters that run commands, load code, or make the server read or write files
//! of the user's choosing — they would run as the database server, inside the operator's pod),
//! known ([`known_params`], type and range checked), and finally unknown keys: denied when their
//! name says they take a command, a library or a path ([`risky_unknown`]), otherwise passed
//! through with a warning.
//!
//! Keys are lowercase (both engines treat parameter names case-insensitively, and a single
//! spelling keeps `Port` from slipping past the owned-key check). MySQL treats `-` and `_` alike
//! and accepts `loose-`, `skip-`, `enable-`, `disable-` and `maximum-` prefixes, so MySQL keys are
//! matched in every spelling the server would read ([`mysql_spellings`]).

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
    /// Free text on one line (already checked by [`check_value_safe`]), e.g. `search_path`.
    Text,
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
            ("autovacuum", Bool),
            ("autovacuum_analyze_scale_factor", Real(0.0, 100.0)),
            ("autovacuum_max_workers", Int(1, 262_143)),
            ("autovacuum_naptime", PgTime),
            ("autovacuum_vacuum_cost_limit", Int(-1, 10_000)),
            ("autovacuum_vacuum_scale_factor", Real(0.0, 100.0)),
            ("checkpoint_completion_target", Real(0.0, 1.0)),
            ("checkpoint_timeout", PgTime),
            ("deadlock_timeout", PgTime),
            (
                "default_transaction_isolation",
                Enum(&[
                    "serializable",
                    "repeatable read",
                    "read committed",
                    "read uncommitted",
                ]),
            ),
            ("default_statistics_target", Int(1, 10_000)),
            ("hash_mem_multiplier", Real(1.0, 1000.0)),
            ("huge_pages", Enum(&["on", "off", "try"])),
            ("jit", Bool),
            ("lock_timeout", PgTime),
            ("log_autovacuum_min_duration", PgTime),
            ("log_checkpoints", Bool),
            ("log_disconnections", Bool),
            ("log_lock_waits", Bool),
            (
                "log_min_messages",
                Enum(&[
                    "debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning",
                    "error", "log", "fatal", "panic",
                ]),
            ),
            ("max_locks_per_transaction", Int(10, 2_147_483_647)),
            ("max_prepared_transactions", Int(0, 262_143)),
            ("password_encryption", Enum(&["md5", "scram-sha-256"])),
            ("seq_page_cost", Real(0.0, 1.0e10)),
            ("temp_buffers", Memory(8 * KIB, 800 * KIB, TIB)),
            ("track_io_timing", Bool),
            (
                "wal_compression",
                Enum(&["on", "off", "pglz", "lz4", "zstd"]),
            ),
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
            ("search_path", Text),
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
            ("binlog_expire_logs_seconds", Int(0, 4_294_967_295)),
            (
                "default_authentication_plugin",
                Enum(&[
                    "mysql_native_password",
                    "caching_sha2_password",
                    "sha256_password",
                ]),
            ),
            ("event_scheduler", Enum(&["on", "off", "disabled"])),
            ("general_log", Bool),
            ("innodb_buffer_pool_instances", Int(1, 64)),
            ("innodb_buffer_pool_size", Memory(1, 5 * MIB, 64 * TIB)),
            ("innodb_file_per_table", Bool),
            ("innodb_io_capacity", Int(100, 4_294_967_295)),
            ("innodb_io_capacity_max", Int(100, 4_294_967_295)),
            ("innodb_lock_wait_timeout", Int(1, 1_073_741_824)),
            ("innodb_log_buffer_size", Memory(1, 256 * KIB, 4 * GIB)),
            ("interactive_timeout", Int(1, 31_536_000)),
            ("join_buffer_size", Memory(1, 128, 4 * GIB)),
            ("max_binlog_size", Memory(1, 4 * KIB, GIB)),
            ("max_connect_errors", Int(1, i64::MAX)),
            ("open_files_limit", Int(0, 1_048_576)),
            ("performance_schema", Bool),
            ("read_buffer_size", Memory(1, 8 * KIB, 2 * GIB)),
            ("skip_name_resolve", Bool),
            ("sort_buffer_size", Memory(1, 32 * KIB, 4 * GIB)),
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

/// The name used to match owned/known keys: MySQL ignores `-` vs `_` and `loose_` prefixes.
pub fn canonical_key(engine: Engine, key: &str) -> String {
    match engine {
        Engine::Postgres => key.to_string(),
        Engine::Mysql => {
            let mut k = key.replace('-', "_");
            while let Some(rest) = k.strip_prefix("loose_") {
                k = rest.to_string();
            }
            k
        }
    }
}

/// MySQL option prefixes that select the same variable: `--skip-x` is `--x=0`, `--enable-x` is
/// `--x=1`, `--disable-x` is `--x=0`, `--maximum-x` sets the limit of session variable `x`.
const MYSQL_PREFIXES: [&str; 4] = ["skip_", "enable_", "disable_", "maximum_"];

/// Every name the MySQL server may read `key` as: the canonical key, and the canonical key
/// without one modifier prefix (`loose-skip-grant-tables` -> `skip_grant_tables`, `grant_tables`).
/// PostgreSQL has one spelling.
pub fn mysql_spellings(engine: Engine, key: &str) -> Vec<String> {
    let canonical = canonical_key(engine, key);
    let mut out = vec![canonical.clone()];
    if engine == Engine::Mysql {
        for prefix in MYSQL_PREFIXES {
            if let Some(rest) = canonical.strip_prefix(prefix) {
                out.push(canonical_key(engine, rest));
            }
        }
    }
    out
}

/// Why a parameter may not be set through `spec.config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hazard {
    /// Runs a shell command or SQL statements chosen by the user as the server.
    RunsCommands,
    /// Loads a shared library or plugin into the server.
    LoadsCode,
    /// Makes the server read or write a file or directory chosen by the user.
    ServerFiles,
    /// Switches off access control, or lets clients read files on the server.
    DisablesSecurity,
    /// Replication and clustering settings the operator manages.
    Replication,
}

impl Hazard {
    /// The sentence after "`<key>` ...", saying why it is denied.
    pub fn reason(self) -> &'static str {
        match self {
            Hazard::RunsCommands => {
                "runs commands or statements chosen by the user as the database server, inside the operator's pod"
            }
            Hazard::LoadsCode => {
                "loads shared libraries or plugins into the database server, which would run arbitrary code as the server"
            }
            Hazard::ServerFiles => {
                "makes the database server read or write a file or directory of the user's choosing; paths are managed by the operator"
            }
            Hazard::DisablesSecurity => {
                "switches off access control or lets clients read files on the server"
            }
            Hazard::Replication => "configures replication, which the operator manages",
        }
    }
}

/// Parameters no user may set, by engine: checked against every spelling of a key.
pub fn forbidden_params(engine: Engine) -> &'static [(&'static str, Hazard)] {
    use Hazard::*;
    match engine {
        Engine::Postgres => &[
            ("archive_command", RunsCommands),
            ("archive_cleanup_command", RunsCommands),
            ("recovery_end_command", RunsCommands),
            ("restore_command", RunsCommands),
            ("ssl_passphrase_command", RunsCommands),
            ("ssl_passphrase_command_supports_reload", RunsCommands),
            ("archive_library", LoadsCode),
            ("dynamic_library_path", LoadsCode),
            ("extension_control_path", LoadsCode),
            ("jit_provider", LoadsCode),
            ("local_preload_libraries", LoadsCode),
            ("session_preload_libraries", LoadsCode),
            ("shared_preload_libraries", LoadsCode),
            ("include", ServerFiles),
            ("include_dir", ServerFiles),
            ("include_if_exists", ServerFiles),
            ("krb_server_keyfile", ServerFiles),
            ("log_directory", ServerFiles),
            ("log_filename", ServerFiles),
            ("ssl_ca_file", ServerFiles),
            ("ssl_cert_file", ServerFiles),
            ("ssl_crl_dir", ServerFiles),
            ("ssl_crl_file", ServerFiles),
            ("ssl_dh_params_file", ServerFiles),
            ("ssl_key_file", ServerFiles),
            ("stats_temp_directory", ServerFiles),
            ("allow_alter_system", DisablesSecurity),
            ("allow_system_table_mods", DisablesSecurity),
            ("primary_conninfo", Replication),
            ("primary_slot_name", Replication),
        ],
        Engine::Mysql => &[
            ("init_connect", RunsCommands),
            ("init_file", RunsCommands),
            ("init_replica", RunsCommands),
            ("init_slave", RunsCommands),
            ("early_plugin_load", LoadsCode),
            ("plugin_dir", LoadsCode),
            ("plugin_load", LoadsCode),
            ("plugin_load_add", LoadsCode),
            ("wsrep_provider", LoadsCode),
            ("character_sets_dir", ServerFiles),
            ("chroot", ServerFiles),
            ("core_file", ServerFiles),
            ("debug", ServerFiles),
            ("ft_stopword_file", ServerFiles),
            ("general_log_file", ServerFiles),
            ("innodb_data_file_path", ServerFiles),
            ("innodb_data_home_dir", ServerFiles),
            ("innodb_directories", ServerFiles),
            ("innodb_log_group_home_dir", ServerFiles),
            ("innodb_temp_data_file_path", ServerFiles),
            ("innodb_temp_tablespaces_dir", ServerFiles),
            ("innodb_undo_directory", ServerFiles),
            ("keyring_file_data", ServerFiles),
            ("lc_messages_dir", ServerFiles),
            ("log_basename", ServerFiles),
            ("log_bin", ServerFiles),
            ("log_bin_basename", ServerFiles),
            ("log_bin_index", ServerFiles),
            ("log_error", ServerFiles),
            ("log_slow_query_file", ServerFiles),
            ("log_tc", ServerFiles),
            ("relay_log", ServerFiles),
            ("relay_log_index", ServerFiles),
            ("relay_log_info_file", ServerFiles),
            ("master_info_file", ServerFiles),
            ("replica_load_tmpdir", ServerFiles),
            ("slave_load_tmpdir", ServerFiles),
            ("slow_query_log_file", ServerFiles),
            ("ssl_ca", ServerFiles),
            ("ssl_capath", ServerFiles),
            ("ssl_cert", ServerFiles),
            ("ssl_crl", ServerFiles),
            ("ssl_crlpath", ServerFiles),
            ("ssl_key", ServerFiles),
            ("admin_ssl_ca", ServerFiles),
            ("admin_ssl_capath", ServerFiles),
            ("admin_ssl_cert", ServerFiles),
            ("admin_ssl_crl", ServerFiles),
            ("admin_ssl_crlpath", ServerFiles),
            ("admin_ssl_key", ServerFiles),
            ("mysqlx_ssl_ca", ServerFiles),
            ("mysqlx_ssl_capath", ServerFiles),
            ("mysqlx_ssl_cert", ServerFiles),
            ("mysqlx_ssl_crl", ServerFiles),
            ("mysqlx_ssl_crlpath", ServerFiles),
            ("mysqlx_ssl_key", ServerFiles),
            ("symbolic_links", ServerFiles),
            ("tmpdir", ServerFiles),
            ("local_infile", DisablesSecurity),
            ("secure_file_priv", DisablesSecurity),
            ("skip_grant_tables", DisablesSecurity),
            ("read_only", Replication),
            ("super_read_only", Replication),
        ],
    }
}

/// The hazard of `key` when it is one of [`forbidden_params`] in any of its spellings.
pub fn forbidden(engine: Engine, key: &str) -> Option<Hazard> {
    let spellings = mysql_spellings(engine, key);
    forbidden_params(engine)
        .iter()
        .find(|(name, _)| spellings.iter().any(|s| s == name))
        .map(|(_, hazard)| *hazard)
}

/// Name parts (split at `_` and `.`) that mark a parameter taking a command, a library or a path.
fn risky_parts(engine: Engine) -> &'static [(&'static str, Hazard)] {
    use Hazard::*;
    match engine {
        Engine::Postgres => &[
            ("command", RunsCommands),
            ("program", RunsCommands),
            ("library", LoadsCode),
            ("libraries", LoadsCode),
            ("provider", LoadsCode),
            ("include", ServerFiles),
            ("file", ServerFiles),
            ("filename", ServerFiles),
            ("keyfile", ServerFiles),
            ("dir", ServerFiles),
            ("destdir", ServerFiles),
            ("directory", ServerFiles),
            ("directories", ServerFiles),
            ("path", ServerFiles),
            ("conninfo", Replication),
        ],
        Engine::Mysql => &[
            ("init", RunsCommands),
            ("plugin", LoadsCode),
            ("load", LoadsCode),
            ("library", LoadsCode),
            ("provider", LoadsCode),
            ("file", ServerFiles),
            ("filename", ServerFiles),
            ("dir", ServerFiles),
            ("tmpdir", ServerFiles),
            ("datadir", ServerFiles),
            ("basedir", ServerFiles),
            ("directory", ServerFiles),
            ("directories", ServerFiles),
            ("path", ServerFiles),
            ("socket", ServerFiles),
            ("keyring", ServerFiles),
            ("wsrep", Replication),
        ],
    }
}

/// For a key that is neither forbidden nor known: the hazard its name suggests (`*_command`,
/// `*_libraries`, `*_file`, `*_dir`, `*_path`, `include*`, MySQL `*plugin*`, `init_*`, ...).
/// Such keys are denied rather than passed through, because the operator cannot tell what they do.
pub fn risky_unknown(engine: Engine, key: &str) -> Option<Hazard> {
    let parts = risky_parts(engine);
    mysql_spellings(engine, key).iter().find_map(|spelling| {
        spelling
            .split(['_', '.'])
            .find_map(|part| parts.iter().find(|(p, _)| *p == part))
            .map(|(_, hazard)| *hazard)
            .or_else(|| {
                spelling
                    .starts_with("include")
                    .then_some(Hazard::ServerFiles)
            })
    })
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
        ParamType::Text => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forbidden_parameter_is_denied_in_every_spelling() {
        for engine in Engine::ALL {
            for (name, hazard) in forbidden_params(engine) {
                let mut spellings = vec![name.to_string()];
                if engine == Engine::Mysql {
                    let dashed = name.replace('_', "-");
                    spellings.extend([
                        dashed.clone(),
                        format!("loose-{dashed}"),
                        format!("loose_{name}"),
                        format!("loose-loose-{dashed}"),
                        format!("enable-{dashed}"),
                        format!("disable_{name}"),
                        format!("skip-{dashed}"),
                        format!("loose-maximum-{dashed}"),
                    ]);
                }
                for key in spellings {
                    assert_eq!(forbidden(engine, &key), Some(*hazard), "{engine} {key}");
                }
            }
        }
    }

    #[test]
    fn no_known_parameter_is_forbidden_or_owned() {
        for engine in Engine::ALL {
            for (name, _) in known_params(engine) {
                assert_eq!(forbidden(engine, name), None, "{engine} {name}");
                assert!(!owned_keys(engine).contains(name), "{engine} {name}");
            }
        }
    }

    #[test]
    fn unknown_keys_are_risky_by_the_words_in_their_names() {
        let cases = [
            (
                Engine::Postgres,
                "pgaudit.log_directory",
                Some(Hazard::ServerFiles),
            ),
            (
                Engine::Postgres,
                "myext.startup_command",
                Some(Hazard::RunsCommands),
            ),
            (
                Engine::Postgres,
                "myext.preload_libraries",
                Some(Hazard::LoadsCode),
            ),
            (Engine::Postgres, "includes", Some(Hazard::ServerFiles)),
            (Engine::Postgres, "pg_stat_statements.track", None),
            (Engine::Postgres, "log_line_prefix", None),
            (Engine::Postgres, "timezone", None),
            (
                Engine::Mysql,
                "loose-audit-log-file",
                Some(Hazard::ServerFiles),
            ),
            (
                Engine::Mysql,
                "validate-password-dictionary-file",
                Some(Hazard::ServerFiles),
            ),
            (Engine::Mysql, "skip-some-plugin", Some(Hazard::LoadsCode)),
            (Engine::Mysql, "wsrep_sst_method", Some(Hazard::Replication)),
            (Engine::Mysql, "init_something", Some(Hazard::RunsCommands)),
            (Engine::Mysql, "sql_mode", None),
            (Engine::Mysql, "character-set-server", None),
        ];
        for (engine, key, want) in cases {
            assert_eq!(risky_unknown(engine, key), want, "{engine} {key}");
        }
    }
}
