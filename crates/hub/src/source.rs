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

/// The longest repository name (and owner) the hub accepts.
const MAX_REPO_PART: usize = 96;

/// The longest revision accepted (git's limit on a ref name's component).
const MAX_REVISION: usize = 255;

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
    /// local path. A malformed `hf:` spec is an error naming it: see
    /// [`HfSpec::validate`] for what the hub accepts.
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
        let hf = HfSpec {
            repo: format!("{owner}/{name}"),
            file: file.to_string(),
            revision: revision.to_string(),
        };
        hf.check().map_err(|reason| invalid(spec, reason))?;
        Ok(WeightsSource::Hf(hf))
    }
}

impl HfSpec {
    /// Checks the spec against the hub's rules before anything is asked of
    /// it: a repository id `OWNER/REPO`, each part 1 to 96 letters, digits,
    /// `_`, `-` or `.`, neither starting nor ending with `-` or `.`, without
    /// `--` or `..`, and not ending in `.git`; a revision that is a valid git
    /// ref name (or commit); a file path of non-empty parts other than `.`
    /// and `..`. Fetching checks it too, so no request leaves with a spec
    /// the hub would refuse, or one that walks out of the cache folder.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|reason| invalid(&self.to_string(), reason))
    }

    /// What is wrong with the spec, if anything.
    fn check(&self) -> Result<(), &'static str> {
        let mut parts = self.repo.split('/');
        let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("the repository must be OWNER/REPO");
        };
        for part in [owner, name] {
            check_repo_part(part)?;
        }
        check_revision(&self.revision)?;
        check_file(&self.file)
    }
}

/// The hub's rules for the owner and the name of a repository id.
fn check_repo_part(part: &str) -> Result<(), &'static str> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if part.is_empty() || part.len() > MAX_REPO_PART {
        return Err("the repository must be OWNER/REPO, each part 1 to 96 characters");
    }
    if !part.chars().all(|c| word(c) || matches!(c, '-' | '.')) {
        return Err("the repository must be OWNER/REPO of letters, digits, `-`, `_` and `.`");
    }
    if !part.starts_with(word) || !part.ends_with(word) {
        return Err("a repository part must not start or end with `-` or `.`");
    }
    if part.contains("--") || part.contains("..") {
        return Err("a repository part must not contain `--` or `..`");
    }
    if part.ends_with(".git") {
        return Err("a repository name must not end in `.git`");
    }
    Ok(())
}

/// git's rules for a ref name (`git check-ref-format`), which a branch, a
/// tag, `refs/pr/N` or a commit hash meets, less the characters a URL path
/// gives a meaning to.
fn check_revision(revision: &str) -> Result<(), &'static str> {
    if revision.is_empty() || revision.len() > MAX_REVISION {
        return Err("the revision must be 1 to 255 characters");
    }
    if revision.chars().any(|c| {
        c.is_ascii_control()
            || matches!(
                c,
                ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\' | '%' | '#'
            )
    }) {
        return Err("the revision has a space, a control character or one of ~^:?*[\\%#");
    }
    if revision == "@" || revision.contains("..") || revision.contains("@{") {
        return Err("the revision must not be `@` or contain `..` or `@{`");
    }
    if revision.ends_with('.')
        || revision
            .split('/')
            .any(|part| part.is_empty() || part.starts_with('.') || part.ends_with(".lock"))
    {
        return Err("the revision has an empty part, a part starting with `.` or ending in `.lock`, or ends with `.`");
    }
    Ok(())
}

/// A file path inside a repository: relative, without `.` or `..` parts.
fn check_file(file: &str) -> Result<(), &'static str> {
    if file
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("the file path has an empty, `.` or `..` part");
    }
    if file.chars().any(|c| c.is_ascii_control() || c == '\\') {
        return Err("the file path has a control character or `\\`");
    }
    Ok(())
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
            (
                "hf:facebook/detr-resnet-50@0123456789abcdef0123456789abcdef01234567",
                hf(
                    "facebook/detr-resnet-50",
                    "model.safetensors",
                    "0123456789abcdef0123456789abcdef01234567",
                ),
            ),
            (
                "hf:A_1/b.c-d_e/x.bin@release/v2_1-rc+1",
                hf("A_1/b.c-d_e", "x.bin", "release/v2_1-rc+1"),
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
    fn the_longest_names_the_hub_accepts_are_accepted() {
        let part = "r".repeat(96);
        let spec = format!("hf:{part}/{part}@{}", "v".repeat(255));
        assert!(WeightsSource::parse(&spec).is_ok(), "{spec}");
    }

    #[test]
    fn a_spec_built_by_hand_is_checked_too() {
        let err = HfSpec {
            repo: "../..".into(),
            file: "etc/passwd".into(),
            revision: "main".into(),
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("`hf:../../etc/passwd@main`"), "{err}");
        assert!(err.contains("must not start or end"), "{err}");
    }

    #[test]
    fn malformed_specs_are_errors_naming_spec_and_form() {
        let long_name = format!("hf:timm/{}", "r".repeat(97));
        let long_revision = format!("hf:timm/resnet18@{}", "r".repeat(256));
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
            "hf:timm/resnet18/./x",
            "hf:ti mm/resnet18",
            // Repository ids the hub refuses.
            "hf:../../etc/passwd",
            "hf:timm/..",
            "hf:-timm/resnet18",
            "hf:timm/resnet18-",
            "hf:.timm/resnet18",
            "hf:timm/resnet18.",
            "hf:ti--mm/resnet18",
            "hf:timm/res..net18",
            "hf:timm/resnet18.git",
            "hf:timm/r\u{e9}snet18",
            &long_name,
            // Revisions that are no git ref name.
            "hf:timm/resnet18@../main",
            "hf:timm/resnet18@a..b",
            "hf:timm/resnet18@main.lock",
            "hf:timm/resnet18@refs//pr",
            "hf:timm/resnet18@/main",
            "hf:timm/resnet18@main/",
            "hf:timm/resnet18@.hidden",
            "hf:timm/resnet18@main.",
            "hf:timm/resnet18@ma in",
            "hf:timm/resnet18@main?x=1",
            "hf:timm/resnet18@%2e%2e",
            "hf:timm/resnet18@br@{1}",
            &long_revision,
        ] {
            let err = WeightsSource::parse(spec).unwrap_err().to_string();
            assert!(err.contains(&format!("`{spec}`")), "{err}");
            assert!(err.contains("hf:OWNER/REPO[/FILE][@REVISION]"), "{err}");
        }
    }
}
