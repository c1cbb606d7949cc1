//! Demo certificates for mTLS between sensors and the aggregator: one CA, a server certificate
//! for the aggregator, and a client certificate per sensor whose DNS name is the sensor's
//! identity (`sensor-0`, `sensor-1`, ...). The aggregator admits a sensor for view `v` only with
//! a certificate from this CA valid for the identity configured for `v`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The identity of the sensor for `view` in the demo certificates.
pub fn sensor_identity(view: u32) -> String {
    format!("sensor-{view}")
}

/// Writes `ca.pem`, `aggregator.pem`/`.key` (valid for `aggregator_names`) and
/// `sensor-V.pem`/`.key` for each view into `dir`. The CA's key is not kept: nothing else can
/// be signed by it later, which is what a demo fleet wants.
pub fn write_demo_certificates(
    dir: &Path,
    views: u32,
    aggregator_names: &[String],
    ca_name: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: String| -> anyhow::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
        Ok(())
    };
    write("ca.pem", ca.pem())?;
    let leaf =
        |names: Vec<String>, usage: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut p = CertificateParams::new(names.clone())?;
            p.distinguished_name
                .push(DnType::CommonName, names[0].clone());
            p.extended_key_usages = vec![usage];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = p.signed_by(&key, &ca)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
    let (cert, key) = leaf(
        aggregator_names.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write("aggregator.pem", cert)?;
    write("aggregator.key", key)?;
    for v in 0..views {
        let id = sensor_identity(v);
        let (cert, key) = leaf(vec![id.clone()], ExtendedKeyUsagePurpose::ClientAuth)?;
        write(&format!("{id}.pem"), cert)?;
        write(&format!("{id}.key"), key)?;
    }
    Ok(written)
}
