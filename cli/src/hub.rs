//! Checkpoints on the Hugging Face Hub: `hub:OWNER/NAME[@REV][/FILE]`
//! wherever a checkpoint path is taken, fetched through the hf-hub cache.
//!
//! The endpoint is `HF_ENDPOINT` (default `https://huggingface.co`), the
//! token `HF_TOKEN` or the Hugging Face CLI's token file (hf-hub's
//! resolution), the cache hf-hub's (`HF_HUB_CACHE`, `$HF_HOME/hub`, …).
//! `HF_HUB_OFFLINE=1` reads the cache only. The token is never printed: the
//! errors here name the repository, the revision and the file, not the
//! request.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use hf_hub::{HFClient, HFClientSync, HFError};
use kdprune_data::{DownloadBar, HubOptions};

/// The file a `hub:` reference names when it names none.
pub const DEFAULT_FILE: &str = "model.safetensors";

/// A checkpoint on the Hub: `hub:OWNER/NAME[@REV][/FILE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Branch, tag or commit (`main` when absent).
    pub revision: Option<String>,
    /// Path of the file inside the repository ([`DEFAULT_FILE`] when absent).
    pub file: String,
}

impl HubRef {
    /// The reference `text` holds, `None` when it does not start with `hub:`.
    pub fn parse(text: &str) -> Result<Option<HubRef>> {
        let Some(rest) = text.strip_prefix("hub:") else {
            return Ok(None);
        };
        let bad = |why: &str| {
            anyhow!("`{text}` is not a Hub checkpoint reference ({why}); expected hub:OWNER/NAME[@REV][/FILE]")
        };
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let name_rev = parts.next().ok_or_else(|| bad("no repository name"))?;
        let file = parts.next().unwrap_or(DEFAULT_FILE);
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, Some(r.to_string())),
            None => (name_rev, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !valid(owner) || !valid(name) {
            return Err(bad("owner and name are letters, digits, `-`, `_` and `.`"));
        }
        if revision.as_deref().is_some_and(str::is_empty) {
            return Err(bad("empty revision after `@`"));
        }
        if file.is_empty() || file.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(bad("the file is a relative path inside the repository"));
        }
        Ok(Some(HubRef {
            repo: format!("{owner}/{name}"),
            revision,
            file: file.to_string(),
        }))
    }

    /// The revision, `main` when none was given.
    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hub:{}", self.repo)?;
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        write!(f, "/{}", self.file)
    }
}

/// A client for the endpoint, token and cache of the environment, and its
/// cache folder.
pub fn client() -> Result<(HFClientSync, PathBuf)> {
    let setup = |e: HFError| {
        anyhow!(
            "cannot set up the Hugging Face Hub client: {}",
            describe(&e)
        )
    };
    let inner = HFClient::builder().build().map_err(setup)?;
    let cache = inner.cache_dir().to_path_buf();
    Ok((HFClientSync::from_inner(inner).map_err(setup)?, cache))
}

/// `path` itself, or for a `hub:` reference the path of the file in the
/// hf-hub cache, fetched first unless `HF_HUB_OFFLINE` is set (a progress
/// bar on stderr while bytes move).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let Some(text) = path.to_str() else {
        return Ok(path.to_path_buf());
    };
    let Some(r) = HubRef::parse(text)? else {
        return Ok(path.to_path_buf());
    };
    let offline = HubOptions::from_env().offline;
    let (client, cache) = client()?;
    let (owner, name) = hf_hub::split_id(&r.repo);
    let repo = client.model(owner, name);
    let request = || {
        repo.download_file()
            .filename(r.file.clone())
            .revision(r.revision_or_main().to_string())
    };
    let got = if offline {
        request().local_files_only(true).send().map_err(|_| {
            anyhow!(
                "{r} is not in the Hub cache ({}) and HF_HUB_OFFLINE is set; run once online to fill it",
                cache.display()
            )
        })?
    } else {
        eprintln!("fetching {r}");
        request()
            .progress(DownloadBar::new(&r.to_string()))
            .send()
            .map_err(|e| anyhow!("cannot fetch {r}: {}", describe(&e)))?
    };
    Ok(got)
}

/// One line about a client error, for a person: what went wrong and what to
/// do. Built from the status and the server's message only — never from
/// the request, so no header (the token) can leak into it.
pub fn describe(e: &HFError) -> String {
    let said = |message: &Option<String>| {
        message
            .as_ref()
            .map(|m| format!(" (the Hub says: {m})"))
            .unwrap_or_default()
    };
    match e {
        HFError::AuthRequired { context } => format!(
            "the Hub refused the token (401){}: set HF_TOKEN to a valid token with write access, or log in with `huggingface-cli login`",
            said(&context.server_message)
        ),
        HFError::Forbidden { context } => format!(
            "the token may not do this (403){}: check that it has write access to the repository",
            said(&context.server_message)
        ),
        HFError::RepoNotFound { repo_id, .. } => {
            format!("no repository {repo_id} (404), or no access to it")
        }
        HFError::EntryNotFound { path, repo_id, .. } => {
            format!("no file {path} in {repo_id} (404)")
        }
        HFError::RevisionNotFound {
            revision, repo_id, ..
        } => format!("no revision {revision} in {repo_id} (404)"),
        HFError::Conflict { context } => format!(
            "the Hub reports a conflict (409){}: the branch moved or the repository is being changed; try again",
            said(&context.server_message)
        ),
        HFError::Request { .. } => {
            "the Hub cannot be reached (connection refused or cut); check HF_ENDPOINT and the network"
                .to_string()
        }
        HFError::Http { context } => format!(
            "the Hub answered HTTP {}{}",
            context.status,
            said(&context.server_message)
        ),
        // The other variants carry no request headers; their text is safe.
        other => other.to_string(),
    }
}

/// Fails unless `repo` is `OWNER/NAME` of the characters the Hub allows.
pub fn check_repo_id(repo: &str) -> Result<()> {
    match HubRef::parse(&format!("hub:{repo}")) {
        Ok(Some(r)) if r.repo == repo => Ok(()),
        _ => bail!("--repo `{repo}` is not OWNER/NAME (letters, digits, `-`, `_`, `.`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print() {
        let r = HubRef::parse("hub:me/lenet@v1/runs/model.safetensors")
            .unwrap()
            .unwrap();
        assert_eq!(r.repo, "me/lenet");
        assert_eq!(r.revision.as_deref(), Some("v1"));
        assert_eq!(r.file, "runs/model.safetensors");
        assert_eq!(r.to_string(), "hub:me/lenet@v1/runs/model.safetensors");
        let d = HubRef::parse("hub:me/lenet").unwrap().unwrap();
        assert_eq!(
            (d.revision_or_main(), d.file.as_str()),
            ("main", DEFAULT_FILE)
        );
        assert_eq!(HubRef::parse("runs/x.safetensors").unwrap(), None);
        for bad in [
            "hub:me",
            "hub:/x",
            "hub:me/x@",
            "hub:me/x/../y",
            "hub:m e/x",
            "hub:me/x/",
        ] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
        assert!(check_repo_id("me/lenet").is_ok());
        assert!(check_repo_id("me/lenet/x").is_err());
    }
}
