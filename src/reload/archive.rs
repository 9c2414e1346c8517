//! `.tar.gz` bundles, read into memory and never unpacked to disk.
//!
//! An archive contains the bundle directory's files at its root (`bundle.yaml`,
//! `rules/…`), optionally with a leading `./`, plus the signature files of a
//! signed bundle. Only regular files and directories are accepted: absolute
//! paths, `..` components, symbolic and hard links, device and FIFO entries
//! reject the whole archive, as do archives over the size or entry limits.
//! The same files as in a bundle directory are kept: `.yaml` and `.yml`
//! files whose path has no component starting with `.`.

use std::io::Read;
use std::path::Path;

use tar::EntryType;

use super::activation::LoadedBundle;
use super::signature::{MANIFEST_FILE, SIGNATURE_FILE, SignatureFiles};
use crate::policy::compile::{MAX_BUNDLE_BYTES, MAX_BUNDLE_FILES};
use crate::policy::{BundleError, BundleFiles};

/// Limits on an archive, checked while it is read.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    /// Largest compressed archive accepted, in bytes.
    pub max_compressed_bytes: u64,
    /// Largest total size of the entries' contents, in bytes.
    pub max_unpacked_bytes: u64,
    /// Most entries, directories included.
    pub max_entries: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_compressed_bytes: 32 * 1024 * 1024,
            max_unpacked_bytes: MAX_BUNDLE_BYTES,
            max_entries: MAX_BUNDLE_FILES,
        }
    }
}

fn error(message: String) -> BundleError {
    BundleError {
        errors: vec![message],
    }
}

/// Reads a `.tar.gz` file into memory and then as [`read_archive`] does.
pub fn read_archive_file(path: &Path, limits: &ArchiveLimits) -> Result<LoadedBundle, BundleError> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| error(format!("cannot read archive `{}`: {e}", path.display())))?;
    if metadata.len() > limits.max_compressed_bytes {
        return Err(error(format!(
            "archive `{}` is {} bytes; the limit is {}",
            path.display(),
            metadata.len(),
            limits.max_compressed_bytes
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| error(format!("cannot read archive `{}`: {e}", path.display())))?;
    read_archive(&bytes, limits)
}

/// Reads a gzip-compressed tar archive held in memory.
pub fn read_archive(bytes: &[u8], limits: &ArchiveLimits) -> Result<LoadedBundle, BundleError> {
    if bytes.len() as u64 > limits.max_compressed_bytes {
        return Err(error(format!(
            "archive is {} bytes; the limit is {}",
            bytes.len(),
            limits.max_compressed_bytes
        )));
    }

    // Tar headers and padding add at most 1,536 bytes per entry on top of
    // the contents. Bounding the decompressed stream stops a gzip bomb made
    // of headers or padding, which the content total alone would miss.
    let stream_limit = limits
        .max_unpacked_bytes
        .saturating_add((limits.max_entries as u64).saturating_mul(1536))
        .saturating_add(64 * 1024);
    let decoder = BoundedReader {
        inner: flate2::read::GzDecoder::new(bytes),
        remaining: stream_limit,
        limit: stream_limit,
    };
    let mut archive = tar::Archive::new(decoder);

    let mut files = BundleFiles::default();
    let mut manifest = None;
    let mut signature = None;
    let mut entry_count = 0usize;
    let mut unpacked: u64 = 0;

    let entries = archive
        .entries()
        .map_err(|e| error(format!("invalid archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| error(format!("invalid archive: {e}")))?;
        entry_count += 1;
        if entry_count > limits.max_entries {
            return Err(error(format!(
                "archive holds more than {} entries",
                limits.max_entries
            )));
        }

        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_type = entry.header().entry_type();
        match entry_type {
            EntryType::Regular | EntryType::Continuous => {}
            EntryType::Directory => {
                normalize_entry_path(&raw_path)?;
                continue;
            }
            // A pax global header, as `git archive` writes, carries only
            // metadata such as a commit id.
            EntryType::XGlobalHeader => continue,
            EntryType::Symlink | EntryType::Link => {
                return Err(error(format!(
                    "archive entry `{raw_path}` is a link; bundles may hold only regular files and directories"
                )));
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(error(format!(
                    "archive entry `{raw_path}` is a device or FIFO; bundles may hold only regular files and directories"
                )));
            }
            other => {
                return Err(error(format!(
                    "archive entry `{raw_path}` has unsupported type {other:?}; bundles may hold only regular files and directories"
                )));
            }
        }

        let path = normalize_entry_path(&raw_path)?;
        let size = entry.size();
        unpacked = unpacked.saturating_add(size);
        if unpacked > limits.max_unpacked_bytes {
            return Err(error(format!(
                "archive unpacks to more than {} bytes",
                limits.max_unpacked_bytes
            )));
        }

        let keep_as_policy = is_policy_file(&path);
        let signature_slot = match path.as_str() {
            MANIFEST_FILE => Some(&mut manifest),
            SIGNATURE_FILE => Some(&mut signature),
            _ => None,
        };
        if !keep_as_policy && signature_slot.is_none() {
            continue;
        }

        let capacity = usize::try_from(size).unwrap_or(0).min(1024 * 1024);
        let mut content = Vec::with_capacity(capacity);
        entry
            .read_to_end(&mut content)
            .map_err(|e| error(format!("invalid archive entry `{path}`: {e}")))?;

        let duplicate = match signature_slot {
            Some(slot) => slot.replace(content).is_some(),
            None => files.files.insert(path.clone(), content).is_some(),
        };
        if duplicate {
            return Err(error(format!("archive holds `{path}` twice")));
        }
    }

    let signature = match (manifest, signature) {
        (None, None) => None,
        (Some(manifest), Some(signature)) => Some(SignatureFiles {
            manifest,
            signature,
        }),
        _ => {
            return Err(error(format!(
                "archive holds only one of `{MANIFEST_FILE}` and `{SIGNATURE_FILE}`"
            )));
        }
    };
    Ok(LoadedBundle { files, signature })
}

/// Checks an entry path and returns it relative to the bundle root with
/// `/` separators. `.` components and repeated slashes are dropped.
fn normalize_entry_path(raw: &str) -> Result<String, BundleError> {
    if raw.starts_with('/') {
        return Err(error(format!(
            "archive entry `{raw}` has an absolute path; paths must be relative to the bundle root"
        )));
    }
    if raw.contains('\\') || raw.contains('\0') {
        return Err(error(format!(
            "archive entry `{raw}` contains `\\` or NUL; use `/` as the only separator"
        )));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(error(format!(
                    "archive entry `{raw}` contains `..`; paths must stay inside the bundle"
                )));
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Returns whether a bundle directory would keep this file: a `.yaml` or
/// `.yml` file whose path has no component starting with `.`.
fn is_policy_file(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|part| !part.starts_with('.'))
        && (path.ends_with(".yaml") || path.ends_with(".yml"))
}

/// Writes a bundle as a `.tar.gz` with fixed metadata (mode 0644, owner 0,
/// time 0), so the same files always make the same archive.
pub fn write_archive(
    files: &BundleFiles,
    signature: Option<&SignatureFiles>,
) -> Result<Vec<u8>, String> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Deterministic);

    let mut entries: Vec<(&str, &[u8])> = files
        .files
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_slice()))
        .collect();
    if let Some(signature) = signature {
        entries.push((MANIFEST_FILE, &signature.manifest));
        entries.push((SIGNATURE_FILE, &signature.signature));
    }

    for (name, content) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, content)
            .map_err(|e| format!("cannot add `{name}` to the archive: {e}"))?;
    }
    let encoder = builder
        .into_inner()
        .map_err(|e| format!("cannot finish the archive: {e}"))?;
    encoder
        .finish()
        .map_err(|e| format!("cannot compress the archive: {e}"))
}

/// A reader that fails once more than `limit` bytes were read through it.
struct BoundedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        match self.remaining.checked_sub(read as u64) {
            Some(remaining) => {
                self.remaining = remaining;
                Ok(read)
            }
            None => Err(std::io::Error::other(format!(
                "archive decompresses to more than {} bytes",
                self.limit
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_normalized() {
        assert_eq!(
            normalize_entry_path("./rules//a.yaml").unwrap(),
            "rules/a.yaml"
        );
        assert_eq!(normalize_entry_path("bundle.yaml").unwrap(), "bundle.yaml");
    }

    #[test]
    fn escaping_entry_paths_are_rejected() {
        for raw in [
            "/etc/passwd",
            "../x.yaml",
            "rules/../../x.yaml",
            "a\\b.yaml",
        ] {
            assert!(normalize_entry_path(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn written_archive_reads_back() {
        let mut files = BundleFiles::default();
        files.files.insert("bundle.yaml".into(), b"a".to_vec());
        files.files.insert("rules/r.yaml".into(), b"b".to_vec());
        let bytes = write_archive(&files, None).unwrap();
        let loaded = read_archive(&bytes, &ArchiveLimits::default()).unwrap();
        assert_eq!(loaded.files, files);
        assert_eq!(loaded.signature, None);
        assert_eq!(write_archive(&files, None).unwrap(), bytes);
    }
}
