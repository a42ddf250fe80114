//! The `admission` binary: `serve`, `check`, `dev-cert` and `catalog`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use admission::check::{self, CheckError};
use admission::cli::{
    self, CatalogArgs, CertSource, CheckArgs, CheckOutput, Cli, Command, DevCertArgs, ServeArgs,
};
use admission::namespaces::NamespaceCache;
use admission::{devcert, logging, server, tls, Admission, Error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // kube's client and our server both use ring; make it the process default explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(args) => match run_serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // Logged (not printed) so JSON log pipelines see it; stderr either way.
                tracing::error!(%error, "admission server failed");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => run_check(&args),
        Command::DevCert(args) => match run_dev_cert(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Catalog(args) => run_catalog(&args),
    }
}

fn run_catalog(args: &CatalogArgs) -> ExitCode {
    let catalog = match cli::load_catalog(args.catalog_file.as_deref()) {
        Ok(catalog) => catalog,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(check::EXIT_UNREADABLE);
        }
    };
    let view = admission::catalog_view::CatalogView::of(&catalog);
    match args.output {
        CheckOutput::Text => print!("{}", view.to_text()),
        CheckOutput::Json => match serde_json::to_string_pretty(&view) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

fn run_serve(args: ServeArgs) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "failed to start the async runtime".to_owned(),
            source,
        })?;
    runtime.block_on(async move {
        let catalog = cli::load_catalog(args.catalog.as_deref())?;
        let client = cluster_client(&args).await?;
        // Stops the background tasks (certificate manager, file reload) after the server.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let cert_config = args.certs.clone();
        // TLS material is checked before the port is bound.
        let (resolver, cert_readiness) = match (args.cert_source(client.is_some()), &client) {
            (CertSource::Managed, Some(client)) => {
                tracing::info!(
                    namespace = %cert_config.cert_namespace,
                    secret = %cert_config.cert_secret,
                    cert_dir = %cert_config.cert_dir.display(),
                    writes_cert_dir = cert_config.writes_cert_dir(),
                    "managing the webhook certificates"
                );
                cert_config.validate().map_err(certs::StoreError::from)?;
                let mut manager = certs::CertManager::new(client.clone(), cert_config.clone());
                let readiness = manager.readiness();
                if cert_config.writes_cert_dir() {
                    // Host run: the Secret is created or adopted and the files written now,
                    // so a broken setup fails here with the reason.
                    manager.sync_once().await?;
                }
                // Started before waiting for the files: in a pod this replica may be the one
                // that has to create the Secret its volume is waiting for.
                tokio::spawn(manager.run(stopped()));
                let (cert, key) = (cert_config.cert_path(), cert_config.key_path());
                let resolver = certs::ReloadingResolver::from_files_when_ready(
                    &cert,
                    &key,
                    args.cert_files_timeout,
                )
                .await
                .map_err(|e| tls::TlsError::from_cert_error(&cert, &key, e))?;
                (resolver, Some(readiness))
            }
            (source, _) => {
                let (cert, key) = match source {
                    CertSource::Files { cert, key } => (cert, key),
                    CertSource::Managed => (cert_config.cert_path(), cert_config.key_path()),
                };
                tracing::info!(
                    cert = %cert.display(),
                    manage_certs = cert_config.manage_certs,
                    cluster = client.is_some(),
                    "serving certificate files only (no certificate management)"
                );
                (tls::reloading_resolver(&cert, &key)?, None)
            }
        };
        resolver.spawn_reload(cert_config.cert_reload_interval, stopped());
        let tls_config = tls::server_config(resolver.clone())?;
        let (namespaces, watch_task) = match &client {
            Some(client) => {
                let (cache, task) = NamespaceCache::watch(client.clone());
                (cache, Some(task))
            }
            None => (NamespaceCache::Disabled, None),
        };
        let mut admission = Admission::new(catalog, namespaces, args.limits());
        if let Some(readiness) = cert_readiness {
            admission = admission.with_readiness_check(move || readiness.check(&resolver));
        }
        let app = Arc::new(admission);
        let listener = server::bind(args.listen).await?;
        let shutdown = {
            let app = app.clone();
            let delay = args.shutdown_delay;
            async move {
                opkit::shutdown::signal().await;
                app.begin_draining();
                if !delay.is_zero() {
                    tracing::info!(
                        delay_ms = delay.as_millis() as u64,
                        "failing readiness before closing the listener"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let result = server::serve(listener, tls_config, app, shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(task) = watch_task {
            task.abort();
        }
        result
    })
}

/// The cluster for the namespace cache and certificate management, or `None` without one
/// (`--no-cluster`, or nothing configured).
async fn cluster_client(args: &ServeArgs) -> Result<Option<kube::Client>, Error> {
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    if args.no_cluster {
        tracing::info!("--no-cluster: production-namespace replicas default disabled");
        return Ok(None);
    }
    let config = if let Some(path) = &args.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| Error::Kube(format!("{}: {e}", path.display())))?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kube(format!("{}: {e}", path.display())))?
    } else if args.in_cluster {
        Config::incluster().map_err(|e| Error::Kube(e.to_string()))?
    } else {
        match Config::infer().await {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%error, "no Kubernetes configuration found; production-namespace replicas default and certificate management disabled");
                return Ok(None);
            }
        }
    };
    tracing::info!(cluster = %config.cluster_url, "watching namespaces for the production replicas default");
    kube::Client::try_from(config)
        .map(Some)
        .map_err(|e| Error::Kube(e.to_string()))
}

fn run_check(args: &CheckArgs) -> ExitCode {
    let catalog = match cli::load_catalog(args.catalog.as_deref()) {
        Ok(catalog) => catalog,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(check::EXIT_UNREADABLE);
        }
    };
    match check::check_files(&args.file, args.old.as_deref(), &catalog, args.production) {
        Ok(report) => {
            match args.output {
                CheckOutput::Text => print!("{}", report.to_text()),
                CheckOutput::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(check::EXIT_UNREADABLE);
                    }
                },
            }
            ExitCode::from(report.exit_code())
        }
        Err(
            error @ (CheckError::Read { .. }
            | CheckError::Yaml { .. }
            | CheckError::NotDatabase { .. }),
        ) => {
            eprintln!("error: {error}");
            ExitCode::from(check::EXIT_UNREADABLE)
        }
    }
}

fn run_dev_cert(args: &DevCertArgs) -> Result<(), Error> {
    let cert = devcert::generate(&args.hosts, args.days)?;
    let files = devcert::write(&args.out, &cert)?;
    println!(
        "wrote {} (CA), {} and {} for {} (valid {} days)",
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        args.hosts.join(", "),
        args.days
    );
    Ok(())
}
