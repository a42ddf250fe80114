//! Prints the Database CRD as YAML.
//!
//! ```text
//! crdgen                               v1 only            > deploy/crd/database.yaml
//! crdgen --with-conversion             + v1beta1/v1alpha1 > deploy/crd/database-with-conversion.yaml
//!                                      (webhook Service db-operator-webhook.db-operator-system:443/convert)
//! crdgen --conversion-url URL          + v1beta1/v1alpha1, webhook at URL (local runs)
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use api::crd::{crd_with_conversion_yaml, crd_yaml, ConversionEndpoint};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = match args.as_slice() {
        [] => crd_yaml(),
        ["--with-conversion"] => crd_with_conversion_yaml(&ConversionEndpoint::default()),
        ["--conversion-url", url] => {
            crd_with_conversion_yaml(&ConversionEndpoint::Url((*url).to_string()))
        }
        _ => {
            eprintln!("usage: crdgen [--with-conversion | --conversion-url URL]");
            return ExitCode::from(2);
        }
    };
    print!("{yaml}");
    ExitCode::SUCCESS
}
