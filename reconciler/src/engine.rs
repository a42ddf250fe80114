//! Per-engine knowledge: ports, environment, probes, configuration file rendering and the dump
//! command used by backups. Everything here is pure and deterministic.

use std::collections::BTreeMap;

use api::v1::Engine;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ExecAction, Probe, SecretKeySelector};

/// Key of the generated admin user name in the credentials Secret.
pub const SECRET_KEY_USERNAME: &str = "username";
/// Key of the generated password in the credentials Secret.
pub const SECRET_KEY_PASSWORD: &str = "password";
/// Key of the initial database name in the credentials Secret.
pub const SECRET_KEY_DATABASE: &str = "database";

/// Both official images run the server as uid/gid 999.
pub const RUN_AS_USER: i64 = 999;

/// Where the backup volume is mounted in backup Job pods.
pub const BACKUP_MOUNT_PATH: &str = "/backup";

/// Short lowercase engine name used for container and port names and labels.
pub fn short_name(engine: &Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::Mysql => "mysql",
    }
}

/// TCP port the server listens on.
pub fn port(engine: &Engine) -> i32 {
    engine.default_port()
}

/// Name of the administrative user written to the credentials Secret.
pub fn admin_username(engine: &Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::Mysql => "root",
    }
}

/// Where the data volume is mounted.
pub fn data_mount_path(engine: &Engine) -> &'static str {
    match engine {
        Engine::Postgres => "/var/lib/postgresql/data",
        Engine::Mysql => "/var/lib/mysql",
    }
}

/// The server's socket and pid directory: an emptyDir, since the root filesystem is read-only.
pub fn run_dir(engine: &Engine) -> &'static str {
    match engine {
        Engine::Postgres => "/var/run/postgresql",
        Engine::Mysql => "/var/run/mysqld",
    }
}

/// Directory the ConfigMap is mounted into, and the file name inside it.
pub fn config_mount(engine: &Engine) -> (&'static str, &'static str) {
    match engine {
        Engine::Postgres => ("/etc/postgresql", "postgresql.conf"),
        // The official image's my.cnf has `!includedir /etc/mysql/conf.d/`.
        Engine::Mysql => ("/etc/mysql/conf.d", "operator.cnf"),
    }
}

/// Container arguments that make the server read the rendered configuration.
pub fn container_args(engine: &Engine) -> Vec<String> {
    match engine {
        Engine::Postgres => vec![
            "-c".to_owned(),
            "config_file=/etc/postgresql/postgresql.conf".to_owned(),
        ],
        Engine::Mysql => Vec::new(),
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

/// Environment of the database container; credentials come from the Secret, never inline.
pub fn server_env(engine: &Engine, secret: &str) -> Vec<EnvVar> {
    match engine {
        Engine::Postgres => vec![
            secret_env("POSTGRES_USER", secret, SECRET_KEY_USERNAME),
            secret_env("POSTGRES_PASSWORD", secret, SECRET_KEY_PASSWORD),
            secret_env("POSTGRES_DB", secret, SECRET_KEY_DATABASE),
            // A subdirectory, because the volume root may contain lost+found.
            plain_env("PGDATA", "/var/lib/postgresql/data/pgdata"),
        ],
        Engine::Mysql => vec![
            secret_env("MYSQL_ROOT_PASSWORD", secret, SECRET_KEY_PASSWORD),
            secret_env("MYSQL_DATABASE", secret, SECRET_KEY_DATABASE),
        ],
    }
}

/// Environment of the backup Job container (the dump tool reads its password from env).
pub fn backup_env(engine: &Engine, secret: &str) -> Vec<EnvVar> {
    match engine {
        Engine::Postgres => vec![
            secret_env("PGUSER", secret, SECRET_KEY_USERNAME),
            secret_env("PGPASSWORD", secret, SECRET_KEY_PASSWORD),
        ],
        Engine::Mysql => vec![secret_env("MYSQL_PWD", secret, SECRET_KEY_PASSWORD)],
    }
}

fn exec_probe(command: String, initial: i32, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), command]),
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn health_command(engine: &Engine) -> String {
    let port = port(engine);
    match engine {
        Engine::Postgres => {
            format!("exec pg_isready -U \"$POSTGRES_USER\" -h 127.0.0.1 -p {port}")
        }
        Engine::Mysql => format!(
            "MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mysqladmin ping -h 127.0.0.1 -P {port} -uroot --silent"
        ),
    }
}

/// Readiness: the server accepts connections.
pub fn readiness_probe(engine: &Engine) -> Probe {
    exec_probe(health_command(engine), 5, 10, 5, 3)
}

/// Liveness: same check, but patient, so crash recovery or a long checkpoint is not killed.
pub fn liveness_probe(engine: &Engine) -> Probe {
    exec_probe(health_command(engine), 30, 20, 5, 6)
}

/// Sensible defaults that `spec.config` entries override.
pub fn default_config(engine: &Engine) -> BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match engine {
        Engine::Postgres => &[
            ("listen_addresses", "*"),
            ("max_connections", "100"),
            ("shared_buffers", "128MB"),
            ("password_encryption", "scram-sha-256"),
            ("log_destination", "stderr"),
            ("logging_collector", "off"),
        ],
        Engine::Mysql => &[
            ("bind-address", "0.0.0.0"),
            ("max_connections", "151"),
            ("innodb_buffer_pool_size", "128M"),
            ("skip-name-resolve", "ON"),
        ],
    };
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Keeps only characters that cannot break out of a `key = value` line.
fn sanitize_key(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}

fn sanitize_value(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// Renders the engine configuration file from `overrides` laid over [`default_config`].
/// Keys are sorted, so the output (and its hash) is deterministic.
pub fn render_config(engine: &Engine, overrides: &BTreeMap<String, String>) -> String {
    let mut merged = default_config(engine);
    for (k, v) in overrides {
        let key = sanitize_key(k);
        if !key.is_empty() {
            merged.insert(key, sanitize_value(v));
        }
    }
    let mut out = String::from("# Rendered by db-operator from spec.config; do not edit.\n");
    if matches!(engine, Engine::Mysql) {
        out.push_str("[mysqld]\n");
    }
    for (k, v) in &merged {
        match engine {
            Engine::Postgres => {
                out.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
            }
            Engine::Mysql => out.push_str(&format!("{k} = {v}\n")),
        }
    }
    out
}

/// Shell command run by the backup Job: dumps every database from the client Service into a
/// timestamped file on the backup volume.
pub fn dump_command(engine: &Engine, host: &str) -> String {
    let port = port(engine);
    let file = format!("{BACKUP_MOUNT_PATH}/{host}-$(date -u +%Y%m%dT%H%M%SZ).sql");
    match engine {
        Engine::Postgres => format!(
            "set -eu; pg_dumpall -h {host} -p {port} --clean --if-exists > \"{file}.tmp\" && mv \"{file}.tmp\" \"{file}\""
        ),
        Engine::Mysql => format!(
            "set -eu; mysqldump -h {host} -P {port} -uroot --all-databases --single-transaction --routines --events > \"{file}.tmp\" && mv \"{file}.tmp\" \"{file}\""
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_config_overrides_defaults_and_output_is_sorted() {
        let overrides = BTreeMap::from([
            ("max_connections".to_owned(), "250".to_owned()),
            ("work_mem".to_owned(), "8MB".to_owned()),
        ]);
        let out = render_config(&Engine::Postgres, &overrides);
        assert!(out.contains("max_connections = '250'\n"), "{out}");
        assert!(!out.contains("max_connections = '100'"), "{out}");
        assert!(out.contains("work_mem = '8MB'\n"), "{out}");
        assert!(out.contains("listen_addresses = '*'\n"), "{out}");
        let keys: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split(" = ").next())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn mysql_config_is_a_mysqld_section() {
        let out = render_config(
            &Engine::Mysql,
            &BTreeMap::from([("max_connections".to_owned(), "500".to_owned())]),
        );
        assert!(out.contains("[mysqld]\n"));
        assert!(out.contains("max_connections = 500\n"));
    }

    #[test]
    fn config_values_cannot_inject_extra_lines() {
        let overrides = BTreeMap::from([(
            "work_mem".to_owned(),
            "1MB'\nshared_preload_libraries = 'evil".to_owned(),
        )]);
        let out = render_config(&Engine::Postgres, &overrides);
        assert!(
            !out.lines()
                .any(|l| l.starts_with("shared_preload_libraries")),
            "{out}"
        );
        assert!(
            out.contains("work_mem = '1MB''shared_preload_libraries = ''evil'"),
            "{out}"
        );
    }

    #[test]
    fn probes_use_the_engine_health_tool() {
        let pg = readiness_probe(&Engine::Postgres);
        let cmd = pg
            .exec
            .and_then(|e| e.command)
            .unwrap_or_default()
            .join(" ");
        assert!(cmd.contains("pg_isready"), "{cmd}");
        let my = liveness_probe(&Engine::Mysql);
        let cmd = my
            .exec
            .and_then(|e| e.command)
            .unwrap_or_default()
            .join(" ");
        assert!(cmd.contains("mysqladmin ping"), "{cmd}");
        assert!(
            !cmd.contains("-p\""),
            "password must not be on the command line: {cmd}"
        );
    }

    #[test]
    fn credentials_come_from_the_secret_never_inline() {
        for engine in [Engine::Postgres, Engine::Mysql] {
            for env in server_env(&engine, "db-credentials") {
                if env.name.contains("PASSWORD") {
                    assert!(env.value.is_none());
                    let key = env
                        .value_from
                        .and_then(|v| v.secret_key_ref)
                        .map(|s| (s.name, s.key));
                    assert_eq!(
                        key,
                        Some(("db-credentials".to_owned(), SECRET_KEY_PASSWORD.to_owned()))
                    );
                }
            }
        }
    }

    #[test]
    fn dump_uses_the_engine_dump_tool_into_the_backup_volume() {
        let pg = dump_command(&Engine::Postgres, "orders");
        assert!(pg.contains("pg_dumpall -h orders -p 5432") && pg.contains("/backup/orders-"));
        let my = dump_command(&Engine::Mysql, "orders");
        assert!(my.contains("mysqldump -h orders -P 3306") && my.contains("/backup/orders-"));
    }
}
