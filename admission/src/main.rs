//! The `admission` binary: `serve`, `check` and `dev-cert`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use admission::check::{self, CheckError};
use admission::cli::{self, CheckArgs, CheckOutput, Cli, Command, DevCertArgs, ServeArgs};
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
    }
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
        // TLS material is checked before the port is bound. Swap this resolver for the certs
        // crate's hot-reloading one to get rotation without restarts.
        let resolver = tls::file_resolver(&args.tls_cert, &args.tls_key)?;
        let tls_config = tls::server_config(resolver)?;
        let (namespaces, watch_task) = namespace_cache(&args).await?;
        let app = Arc::new(Admission::new(catalog, namespaces, args.limits()));
        let listener = server::bind(args.listen).await?;
        let shutdown = {
            let app = app.clone();
            let delay = args.shutdown_delay;
            async move {
                server::shutdown_signal().await;
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
        if let Some(task) = watch_task {
            task.abort();
        }
        result
    })
}

async fn namespace_cache(
    args: &ServeArgs,
) -> Result<(NamespaceCache, Option<tokio::task::JoinHandle<()>>), Error> {
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    if args.no_cluster {
        tracing::info!("--no-cluster: production-namespace replicas default disabled");
        return Ok((NamespaceCache::Disabled, None));
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
                tracing::warn!(%error, "no Kubernetes configuration found; production-namespace replicas default disabled");
                return Ok((NamespaceCache::Disabled, None));
            }
        }
    };
    tracing::info!(cluster = %config.cluster_url, "watching namespaces for the production replicas default");
    let client = kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))?;
    let (cache, task) = NamespaceCache::watch(client);
    Ok((cache, Some(task)))
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
