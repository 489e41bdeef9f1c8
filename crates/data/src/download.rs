//! Downloading and unpacking the official CIFAR-10 archive, atomically.

use std::fs;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::cifar::{Cifar10, DATASET_DIR};
use crate::error::{io_err, DataError, Result};

/// The official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The MD5 of [`CIFAR10_URL`], lowercase hex.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Downloads the CIFAR-10 archive unless `dest_dir/cifar-10-batches-bin` already
/// holds a valid dataset, and returns the path of that folder.
///
/// Progress is reported through `tracing` (see [`fetch_cifar10_with_progress`]
/// for a callback).
pub fn fetch_cifar10(url: &str, dest_dir: &Path, expected_md5: &str) -> Result<PathBuf> {
    let mut last_logged = 0u64;
    fetch_cifar10_with_progress(url, dest_dir, expected_md5, &mut |done, total| {
        if done >= last_logged + (16 << 20) || Some(done) == total {
            last_logged = done;
            tracing::info!(url, downloaded = done, total, "downloading CIFAR-10");
        }
    })
}

/// Like [`fetch_cifar10`], calling `progress(bytes_received, content_length)` after
/// every chunk received.
///
/// Steps: download to a temporary file inside `dest_dir` while computing its MD5;
/// compare with `expected_md5` (case-insensitive); unpack into a temporary folder
/// inside `dest_dir`; check that its `cifar-10-batches-bin/` loads; rename that
/// folder to `dest_dir/cifar-10-batches-bin`. The temporaries are removed on every
/// path, so a failure leaves `dest_dir` as it was.
pub fn fetch_cifar10_with_progress(
    url: &str,
    dest_dir: &Path,
    expected_md5: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf> {
    let target = dest_dir.join(DATASET_DIR);
    if target.exists() {
        return match Cifar10::load(&target) {
            Ok(_) => Ok(target),
            Err(e) => Err(DataError::ExistingInvalid {
                path: target,
                source: Box::new(e),
            }),
        };
    }
    fs::create_dir_all(dest_dir).map_err(io_err("creating", dest_dir))?;

    let mut archive = tempfile::Builder::new()
        .prefix(".cifar10-download-")
        .tempfile_in(dest_dir)
        .map_err(io_err("creating a temporary file in", dest_dir))?;
    let archive_path = archive.path().to_path_buf();
    let actual = download(url, archive.as_file_mut(), &archive_path, progress)?;
    if !actual.eq_ignore_ascii_case(expected_md5.trim()) {
        return Err(DataError::ChecksumMismatch {
            url: url.into(),
            expected: expected_md5.trim().to_ascii_lowercase(),
            actual,
        });
    }

    let unpacked = tempfile::Builder::new()
        .prefix(".cifar10-unpack-")
        .tempdir_in(dest_dir)
        .map_err(io_err("creating a temporary folder in", dest_dir))?;
    archive
        .as_file_mut()
        .seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding", &archive_path))?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(archive.as_file()));
    tar::Archive::new(gz)
        .unpack(unpacked.path())
        .map_err(|source| DataError::Unpack {
            url: url.into(),
            source,
        })?;
    let staged = unpacked.path().join(DATASET_DIR);
    Cifar10::load(&staged).map_err(|e| DataError::BadArchive {
        url: url.into(),
        source: Box::new(e),
    })?;
    fs::rename(&staged, &target).map_err(io_err("moving the unpacked dataset to", &target))?;
    tracing::info!(path = %target.display(), "CIFAR-10 ready");
    Ok(target)
}

/// Streams `url` into `file`, returning the lowercase hex MD5 of the body.
fn download(
    url: &str,
    file: &mut fs::File,
    path: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let http_err = |e: ureq::Error| DataError::Http {
        url: url.into(),
        source: Box::new(e),
    };
    let response = agent.get(url).call().map_err(http_err)?;
    let total = response.body().content_length();
    let mut reader = response.into_body().into_reader();
    let mut hasher = Md5::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|source| DataError::DownloadIo {
                url: url.into(),
                received,
                source,
            })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_err("writing", path))?;
        received += n as u64;
        progress(received, total);
    }
    if let Some(expected) = total.filter(|&t| t != received) {
        return Err(DataError::Truncated {
            url: url.into(),
            expected,
            received,
        });
    }
    file.flush().map_err(io_err("writing", path))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
