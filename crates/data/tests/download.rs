//! `fetch_cifar10` against a local HTTP server serving archives built by the test.

mod common;

use std::path::Path;

use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use resnet_data::{fetch_cifar10, fetch_cifar10_with_progress, Cifar10, DataError, DATASET_DIR};
use resnet_test_support::{file_names, http::Server};

/// Serves one canned HTTP response per connection, `responses.len()` connections, then stops.
fn serve(responses: Vec<Vec<u8>>) -> (String, Server) {
    let connections = responses.len();
    let mut responses = responses.into_iter();
    let server = Server::start(connections, move |_| responses.next().unwrap_or_default());
    (format!("{}/cifar-10-binary.tar.gz", server.url()), server)
}

/// An HTTP 200 response announcing `content_length` bytes and sending `body`.
fn ok_response(body: &[u8], content_length: usize) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
    );
    [head.as_bytes(), body].concat()
}

/// A tar.gz of the files in `src_dir`, placed under `prefix/` in the archive.
fn tar_gz(src_dir: &Path, prefix: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    builder.append_dir_all(prefix, src_dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A small dataset's archive in the official layout, and the dataset itself.
fn archive() -> (Vec<u8>, Cifar10) {
    let src = tempfile::tempdir().unwrap();
    let data = common::write_dataset(src.path(), [4, 3, 3, 2, 5, 6]);
    std::fs::write(src.path().join("readme.html"), "<html></html>").unwrap();
    (tar_gz(src.path(), DATASET_DIR), data)
}

#[test]
fn downloads_verifies_unpacks_and_then_reuses() {
    let (tgz, data) = archive();
    let (url, server) = serve(vec![ok_response(&tgz, tgz.len())]);
    let dest = tempfile::tempdir().unwrap();
    let mut last = (0, None);
    let path = fetch_cifar10_with_progress(
        &url,
        dest.path(),
        &md5_hex(&tgz).to_uppercase(),
        &mut |d, t| last = (d, t),
    )
    .unwrap();
    server.join();
    assert_eq!(last, (tgz.len() as u64, Some(tgz.len() as u64)));
    assert_eq!(path, dest.path().join(DATASET_DIR));
    assert_eq!(file_names(dest.path()), [DATASET_DIR]);
    assert_eq!(Cifar10::load(dest.path()).unwrap(), data);

    // The server is gone: a second fetch must not download.
    let again = fetch_cifar10(&url, dest.path(), &md5_hex(&tgz)).unwrap();
    assert_eq!(again, path);
}

#[test]
fn wrong_checksum_leaves_nothing_behind() {
    let (tgz, _) = archive();
    let (url, server) = serve(vec![ok_response(&tgz, tgz.len())]);
    let dest = tempfile::tempdir().unwrap();
    let wrong = "0123456789abcdef0123456789abcdef";
    let err = fetch_cifar10(&url, dest.path(), wrong).unwrap_err();
    server.join();
    match &err {
        DataError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, &md5_hex(&tgz));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains(wrong));
    assert!(
        file_names(dest.path()).is_empty(),
        "{:?}",
        file_names(dest.path())
    );
}

#[test]
fn truncated_download_leaves_nothing_behind() {
    let (tgz, _) = archive();
    let (url, server) = serve(vec![ok_response(&tgz, tgz.len() + 1000)]);
    let dest = tempfile::tempdir().unwrap();
    let err = fetch_cifar10(&url, dest.path(), &md5_hex(&tgz)).unwrap_err();
    server.join();
    assert!(
        matches!(
            err,
            DataError::Truncated { .. } | DataError::DownloadIo { .. }
        ),
        "unexpected error {err}"
    );
    assert!(
        file_names(dest.path()).is_empty(),
        "{:?}",
        file_names(dest.path())
    );
}

#[test]
fn archive_without_the_dataset_folder_leaves_nothing_behind() {
    let src = tempfile::tempdir().unwrap();
    common::write_dataset(src.path(), [1; 6]);
    let tgz = tar_gz(src.path(), "some-other-name");
    let (url, server) = serve(vec![ok_response(&tgz, tgz.len())]);
    let dest = tempfile::tempdir().unwrap();
    std::fs::write(dest.path().join("keep.txt"), "previous state").unwrap();
    let err = fetch_cifar10(&url, dest.path(), &md5_hex(&tgz)).unwrap_err();
    server.join();
    assert!(
        matches!(err, DataError::BadArchive { .. }),
        "unexpected error {err}"
    );
    assert_eq!(file_names(dest.path()), ["keep.txt"]);
}

#[test]
fn http_error_status_is_an_error() {
    let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (url, server) = serve(vec![not_found.to_vec()]);
    let dest = tempfile::tempdir().unwrap();
    let err = fetch_cifar10(&url, dest.path(), resnet_data::CIFAR10_MD5).unwrap_err();
    server.join();
    assert!(
        matches!(err, DataError::Http { .. }),
        "unexpected error {err}"
    );
    assert!(err.to_string().contains(&url));
    assert!(file_names(dest.path()).is_empty());
}

#[test]
fn an_invalid_existing_dataset_is_reported_not_replaced() {
    let dest = tempfile::tempdir().unwrap();
    common::write_dataset(&dest.path().join(DATASET_DIR), [1; 6]);
    std::fs::remove_file(dest.path().join(DATASET_DIR).join("test_batch.bin")).unwrap();
    // No server: nothing may be downloaded.
    let err = fetch_cifar10(
        "http://127.0.0.1:9/none",
        dest.path(),
        resnet_data::CIFAR10_MD5,
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::ExistingInvalid { .. }),
        "unexpected error {err}"
    );
    // The message names the folder; its cause, the missing file.
    let cause = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(cause.contains("test_batch.bin"), "{cause}");
    assert_eq!(file_names(&dest.path().join(DATASET_DIR)).len(), 6);
}
