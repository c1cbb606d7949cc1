//! `splitnets-certs`: demo certificates for mTLS between sensors and the aggregator.

use std::path::PathBuf;

use clap::Parser;
use splitnets_deploy::certs::{sensor_identity, write_demo_certificates};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Write a demo CA, an aggregator server certificate and one client certificate per sensor (identity sensor-V)"
)]
struct Args {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Sensors (views) to make certificates for.
    #[arg(long, default_value_t = 4)]
    views: u32,
    /// DNS names or IP addresses the aggregator's certificate is valid for.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aggregator,localhost,127.0.0.1"
    )]
    aggregator_names: Vec<String>,
    /// Common name of the CA.
    #[arg(long, default_value = "SplitNets demo fleet CA")]
    ca_name: String,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    match write_demo_certificates(&a.out, a.views, &a.aggregator_names, &a.ca_name) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            let ids: Vec<String> = (0..a.views).map(sensor_identity).collect();
            eprintln!(
                "aggregator: --tls-cert {0}/aggregator.pem --tls-key {0}/aggregator.key --tls-client-ca {0}/ca.pem --view-identities {1}",
                a.out.display(),
                ids.join(",")
            );
            eprintln!(
                "sensor V:   --aggregator https://HOST:50051 --tls-ca {0}/ca.pem --tls-cert {0}/sensor-V.pem --tls-key {0}/sensor-V.key",
                a.out.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("splitnets-certs: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
