//! Fetching weights: local files as they are, hub files through hf-hub's cache.

use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};

use crate::{HfSpec, HubError, Result, WeightsSource};

/// The Hugging Face hub, used when neither the caller nor `HF_ENDPOINT` names another server.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The environment variable that names another hub server.
const ENDPOINT_VAR: &str = "HF_ENDPOINT";

/// Where and from which server hub files are fetched.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub server; `None` means `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// The hub cache folder (by default `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`); `None` means that default.
    pub cache_dir: Option<PathBuf>,
}

impl HubOptions {
    /// The server to ask, without a trailing `/`.
    fn endpoint(&self) -> String {
        let endpoint = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| DEFAULT_ENDPOINT.to_string()),
        };
        endpoint.trim_end_matches('/').to_string()
    }
}

/// The local file `source` names: a local path as it is (it must be a
/// file), a hub file (its spec checked against the hub's rules first, see
/// [`HfSpec::validate`]) from the cache if it is there, else downloaded into it
/// from `endpoint` (else `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`]). The cache
/// is hf-hub's, under `HF_HOME`: once downloaded, a file is found again
/// without any network access.
pub fn fetch(source: &WeightsSource, endpoint: Option<&str>) -> Result<PathBuf> {
    fetch_with(
        source,
        &HubOptions {
            endpoint: endpoint.map(str::to_string),
            cache_dir: None,
        },
    )
}

/// Like [`fetch`], with the server and the cache folder given by `options`.
pub fn fetch_with(source: &WeightsSource, options: &HubOptions) -> Result<PathBuf> {
    match source {
        WeightsSource::Local(path) if path.is_file() => Ok(path.clone()),
        WeightsSource::Local(path) => Err(HubError::NotFound { path: path.clone() }),
        WeightsSource::Hf(spec) => fetch_hf(spec, options),
    }
}

fn fetch_hf(spec: &HfSpec, options: &HubOptions) -> Result<PathBuf> {
    // A spec built by hand has not been through `WeightsSource::parse`.
    spec.validate()?;
    let endpoint = options.endpoint();
    let mut builder = ApiBuilder::from_env()
        .with_progress(false)
        .with_endpoint(endpoint.clone());
    if let Some(dir) = &options.cache_dir {
        builder = builder.with_cache_dir(dir.clone());
    }
    let fail = |error: ApiError| download_error(spec, &endpoint, error);
    let api = builder.build().map_err(fail)?;
    let repo = Repo::with_revision(spec.repo.clone(), RepoType::Model, spec.revision.clone());
    tracing::debug!("fetching {spec} from {endpoint} or the cache");
    // `get` looks in the cache first and downloads only what is not there.
    api.repo(repo).get(&spec.file).map_err(fail)
}

/// A download failure as an error naming the repository and file; an HTTP
/// 401 or 404 means the server knows no such (public) repository or file.
fn download_error(spec: &HfSpec, endpoint: &str, error: ApiError) -> HubError {
    if let ApiError::RequestError(request) = &error {
        if let ureq::Error::StatusCode(status @ (401 | 404)) = **request {
            return HubError::NotOnHub {
                endpoint: endpoint.to_string(),
                repo: spec.repo.clone(),
                file: spec.file.clone(),
                revision: spec.revision.clone(),
                status,
            };
        }
    }
    HubError::Download {
        endpoint: endpoint.to_string(),
        repo: spec.repo.clone(),
        file: spec.file.clone(),
        revision: spec.revision.clone(),
        reason: error.to_string(),
    }
}
