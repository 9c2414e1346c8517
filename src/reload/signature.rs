//! Signed bundles: a manifest of file digests signed with Ed25519.
//!
//! A signed bundle carries two files at its root next to `bundle.yaml`:
//! - `.manifest.json`: `{"format":1,"algorithm":"ed25519","key_id":"…",
//!   "files":{"bundle.yaml":"sha256:<hex>",…}}`, listing every bundle file;
//! - `.manifest.sig`: the Ed25519 signature over the exact bytes of
//!   `.manifest.json`, in standard base64.
//!
//! Both names start with `.`, so bundle loading never reads them as policy.
//! Keys are PEM files: PKCS#8 for the signing key, SubjectPublicKeyInfo for
//! the verifying key, as `openssl pkey` writes them.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{BundleError, BundleFiles};

/// The signed manifest's file name at the bundle root.
pub const MANIFEST_FILE: &str = ".manifest.json";
/// The signature's file name at the bundle root.
pub const SIGNATURE_FILE: &str = ".manifest.sig";

/// Largest manifest or signature file read, far above what 10,000 files need.
const MAX_SIGNATURE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The two signature files of a bundle, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFiles {
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedManifest {
    format: u32,
    algorithm: String,
    /// Fingerprint of the verifying key, so a mismatch names both keys.
    key_id: String,
    files: BTreeMap<String, String>,
}

/// Returns the short fingerprint of a verifying key: the first 16 hex
/// digits of the SHA-256 of its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// Signs `files`, returning the two signature files.
pub fn sign(files: &BundleFiles, key: &SigningKey) -> SignatureFiles {
    let manifest = SignedManifest {
        format: 1,
        algorithm: "ed25519".to_owned(),
        key_id: key_id(&key.verifying_key()),
        files: files
            .files
            .iter()
            .map(|(name, content)| (name.clone(), file_digest(content)))
            .collect(),
    };
    // serde_json fails only on maps with non-string keys or on failing
    // `Serialize` impls, and this struct has neither.
    let mut manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    manifest.push(b'\n');
    let signature = key.sign(&manifest);
    let mut encoded = base64::engine::general_purpose::STANDARD
        .encode(signature.to_bytes())
        .into_bytes();
    encoded.push(b'\n');
    SignatureFiles {
        manifest,
        signature: encoded,
    }
}

/// Checks that `signature` is a valid signature by `key` over a manifest
/// that lists exactly `files` with their digests. Returns every problem.
pub fn verify(
    files: &BundleFiles,
    signature: Option<&SignatureFiles>,
    key: &VerifyingKey,
) -> Result<(), Vec<String>> {
    let Some(signature) = signature else {
        return Err(vec![format!(
            "bundle is not signed: `{MANIFEST_FILE}` and `{SIGNATURE_FILE}` are missing, and a verification key is configured"
        )]);
    };

    let text = String::from_utf8_lossy(&signature.signature);
    let bytes = match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(bytes) => bytes,
        Err(e) => return Err(vec![format!("`{SIGNATURE_FILE}` is not base64: {e}")]),
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return Err(vec![format!(
            "`{SIGNATURE_FILE}` holds {} bytes; an Ed25519 signature has 64",
            bytes.len()
        )]);
    };
    let manifest: Option<SignedManifest> = serde_json::from_slice(&signature.manifest).ok();
    if key
        .verify_strict(&signature.manifest, &Signature::from_bytes(&bytes))
        .is_err()
    {
        let signer = manifest.as_ref().map_or("unknown", |m| m.key_id.as_str());
        return Err(vec![format!(
            "signature does not verify with the configured key `{}`; the manifest names key `{signer}`",
            key_id(key)
        )]);
    }

    // The manifest is signed by a trusted key from here on, but is still
    // checked field by field.
    let manifest: SignedManifest = match serde_json::from_slice(&signature.manifest) {
        Ok(manifest) => manifest,
        Err(e) => return Err(vec![format!("`{MANIFEST_FILE}` is invalid: {e}")]),
    };
    let mut errors = Vec::new();
    if manifest.format != 1 || manifest.algorithm != "ed25519" {
        errors.push(format!(
            "`{MANIFEST_FILE}`: unsupported format `{}` or algorithm `{}`; expected format 1 and `ed25519`",
            manifest.format, manifest.algorithm
        ));
    }
    for (name, content) in &files.files {
        match manifest.files.get(name) {
            None => errors.push(format!(
                "file `{name}` is not listed in the signed manifest"
            )),
            Some(expected) if *expected != file_digest(content) => {
                errors.push(format!("file `{name}` does not match its signed digest"));
            }
            Some(_) => {}
        }
    }
    for name in manifest.files.keys() {
        if !files.files.contains_key(name) {
            errors.push(format!("signed file `{name}` is missing from the bundle"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Reads `.manifest.json` and `.manifest.sig` from a bundle directory.
/// Returns `None` when neither exists, and an error when only one does.
pub fn read_signature_files(root: &Path) -> Result<Option<SignatureFiles>, BundleError> {
    let manifest = read_optional(&root.join(MANIFEST_FILE))?;
    let signature = read_optional(&root.join(SIGNATURE_FILE))?;
    match (manifest, signature) {
        (None, None) => Ok(None),
        (Some(manifest), Some(signature)) => Ok(Some(SignatureFiles {
            manifest,
            signature,
        })),
        _ => Err(BundleError {
            errors: vec![format!(
                "bundle `{}` holds only one of `{MANIFEST_FILE}` and `{SIGNATURE_FILE}`",
                root.display()
            )],
        }),
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BundleError> {
    let fail = |e: std::io::Error| BundleError {
        errors: vec![format!("cannot read `{}`: {e}", path.display())],
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    if metadata.len() > MAX_SIGNATURE_FILE_BYTES {
        return Err(BundleError {
            errors: vec![format!(
                "`{}` is {} bytes; the limit is {MAX_SIGNATURE_FILE_BYTES}",
                path.display(),
                metadata.len()
            )],
        });
    }
    std::fs::read(path).map(Some).map_err(fail)
}

/// Generates a new signing key from the operating system's random source.
pub fn generate_signing_key() -> Result<SigningKey, String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("cannot read random bytes: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Encodes a signing key as a PKCS#8 PEM document.
pub fn signing_key_pem(key: &SigningKey) -> Result<String, String> {
    key.to_pkcs8_pem(Default::default())
        .map(|pem| pem.to_string())
        .map_err(|e| format!("cannot encode the signing key: {e}"))
}

/// Encodes a verifying key as a SubjectPublicKeyInfo PEM document.
pub fn verifying_key_pem(key: &VerifyingKey) -> Result<String, String> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| format!("cannot encode the verifying key: {e}"))
}

/// Reads a PKCS#8 PEM Ed25519 signing key.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read signing key `{}`: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        format!(
            "invalid signing key `{}`: {e}; expected an Ed25519 PKCS#8 PEM key such as `authzd bundle keygen` writes",
            path.display()
        )
    })
}

/// Reads a SubjectPublicKeyInfo PEM Ed25519 verifying key.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read verification key `{}`: {e}", path.display()))?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| {
        format!(
            "invalid verification key `{}`: {e}; expected an Ed25519 public key PEM such as `authzd bundle keygen` writes",
            path.display()
        )
    })
}

fn file_digest(content: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(content)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BundleFiles {
        let mut files = BundleFiles::default();
        files
            .files
            .insert("bundle.yaml".into(), b"name: a".to_vec());
        files
            .files
            .insert("rules/a.yaml".into(), b"rules: []".to_vec());
        files
    }

    #[test]
    fn signed_bundle_verifies() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signature = sign(&files(), &key);
        assert_eq!(
            verify(&files(), Some(&signature), &key.verifying_key()),
            Ok(())
        );
    }

    #[test]
    fn other_key_is_rejected() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let signature = sign(&files(), &other);
        let errors = verify(&files(), Some(&signature), &key.verifying_key()).unwrap_err();
        assert!(
            errors[0].starts_with("signature does not verify"),
            "{errors:?}"
        );
    }

    #[test]
    fn changed_file_is_rejected() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signature = sign(&files(), &key);
        let mut changed = files();
        changed
            .files
            .insert("rules/a.yaml".into(), b"rules: [x]".to_vec());
        changed.files.insert("rules/b.yaml".into(), b"".to_vec());
        let errors = verify(&changed, Some(&signature), &key.verifying_key()).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "file `rules/a.yaml` does not match its signed digest".to_owned(),
                "file `rules/b.yaml` is not listed in the signed manifest".to_owned(),
            ]
        );
    }

    #[test]
    fn unsigned_bundle_is_rejected() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let errors = verify(&files(), None, &key.verifying_key()).unwrap_err();
        assert!(errors[0].starts_with("bundle is not signed"), "{errors:?}");
    }

    #[test]
    fn key_pem_round_trip() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let private = signing_key_pem(&key).unwrap();
        let public = verifying_key_pem(&key.verifying_key()).unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_pem(&private).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(
            VerifyingKey::from_public_key_pem(&public).unwrap(),
            key.verifying_key()
        );
    }
}
