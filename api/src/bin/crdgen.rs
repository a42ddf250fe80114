//! Prints the Database CRD as YAML: `cargo run -p api --bin crdgen > deploy/crd/database.yaml`.
#![forbid(unsafe_code)]

fn main() {
    print!("{}", api::crd::crd_yaml());
}
