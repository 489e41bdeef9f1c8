//! Where weights come from: a local path or a file of a Hugging Face hub repository.

use std::fmt;
use std::path::PathBuf;

use crate::{HubError, Result};

/// The prefix that marks a hub source.
const HF_PREFIX: &str = "hf:";

/// The file of a hub repository used when a spec names none.
pub const DEFAULT_FILE: &str = "model.safetensors";

/// The revision used when a spec names none.
pub const DEFAULT_REVISION: &str = "main";

/// A file of a Hugging Face hub model repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSpec {
    /// `OWNER/REPO`.
    pub repo: String,
    /// The file's path in the repository.
    pub file: String,
    /// A branch, tag or commit.
    pub revision: String,
}

/// Where pretrained weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// A local safetensors file, PyTorch checkpoint or run folder (which the
    /// caller resolves to its model file).
    Local(PathBuf),
    /// A file of a hub repository.
    Hf(HfSpec),
}

impl WeightsSource {
    /// Parses `hf:OWNER/REPO[/FILE][@REVISION]` (file [`DEFAULT_FILE`],
    /// revision [`DEFAULT_REVISION`] when left out) or any other text as a
    /// local path. A malformed `hf:` spec is an error naming it.
    pub fn parse(spec: &str) -> Result<WeightsSource> {
        let Some(rest) = spec.strip_prefix(HF_PREFIX) else {
            if spec.is_empty() {
                return Err(invalid(spec, "it is empty"));
            }
            return Ok(WeightsSource::Local(PathBuf::from(spec)));
        };
        let (path, revision) = match rest.split_once('@') {
            Some((_, "")) => return Err(invalid(spec, "the revision after `@` is empty")),
            Some((_, rev)) if rev.contains('@') => {
                return Err(invalid(spec, "it has more than one `@`"))
            }
            Some((path, rev)) => (path, rev),
            None => (rest, DEFAULT_REVISION),
        };
        let mut parts = path.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        let file = parts.next().unwrap_or(DEFAULT_FILE);
        if !is_repo_part(owner) || !is_repo_part(name) {
            return Err(invalid(
                spec,
                "the repository must be OWNER/REPO of letters, digits, `-`, `_` and `.`",
            ));
        }
        if file.split('/').any(|part| part.is_empty() || part == "..") {
            return Err(invalid(spec, "the file path has an empty or `..` part"));
        }
        Ok(WeightsSource::Hf(HfSpec {
            repo: format!("{owner}/{name}"),
            file: file.to_string(),
            revision: revision.to_string(),
        }))
    }
}

fn is_repo_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn invalid(spec: &str, reason: &'static str) -> HubError {
    HubError::InvalidSpec {
        spec: spec.to_string(),
        reason,
    }
}

impl fmt::Display for HfSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HF_PREFIX}{}/{}@{}",
            self.repo, self.file, self.revision
        )
    }
}

impl fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsSource::Local(path) => write!(f, "{}", path.display()),
            WeightsSource::Hf(spec) => spec.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(repo: &str, file: &str, revision: &str) -> WeightsSource {
        WeightsSource::Hf(HfSpec {
            repo: repo.into(),
            file: file.into(),
            revision: revision.into(),
        })
    }

    #[test]
    fn parses_hub_specs_with_defaults() {
        for (spec, want) in [
            (
                "hf:timm/resnet50.a1_in1k",
                hf("timm/resnet50.a1_in1k", "model.safetensors", "main"),
            ),
            (
                "hf:lmz/candle-resnet/resnet18.safetensors",
                hf("lmz/candle-resnet", "resnet18.safetensors", "main"),
            ),
            (
                "hf:microsoft/resnet-50@refs/pr/1",
                hf("microsoft/resnet-50", "model.safetensors", "refs/pr/1"),
            ),
            (
                "hf:a/b/sub/dir/w.pth@v1.0",
                hf("a/b", "sub/dir/w.pth", "v1.0"),
            ),
        ] {
            assert_eq!(WeightsSource::parse(spec).unwrap(), want, "{spec}");
        }
    }

    #[test]
    fn other_text_is_a_local_path() {
        assert_eq!(
            WeightsSource::parse("runs/r20").unwrap(),
            WeightsSource::Local("runs/r20".into())
        );
    }

    #[test]
    fn displays_the_canonical_spec() {
        let source = WeightsSource::parse("hf:timm/resnet18.tv_in1k").unwrap();
        assert_eq!(
            source.to_string(),
            "hf:timm/resnet18.tv_in1k/model.safetensors@main"
        );
        assert_eq!(WeightsSource::parse(&source.to_string()).unwrap(), source);
    }

    #[test]
    fn malformed_specs_are_errors_naming_spec_and_form() {
        for spec in [
            "",
            "hf:",
            "hf:timm",
            "hf:/resnet18",
            "hf:timm/",
            "hf:timm/resnet18@",
            "hf:timm/resnet18@a@b",
            "hf:timm/resnet18/",
            "hf:timm/resnet18/a//b",
            "hf:timm/resnet18/../x",
            "hf:ti mm/resnet18",
        ] {
            let err = WeightsSource::parse(spec).unwrap_err().to_string();
            assert!(err.contains(&format!("`{spec}`")), "{err}");
            assert!(err.contains("hf:OWNER/REPO[/FILE][@REVISION]"), "{err}");
        }
    }
}
