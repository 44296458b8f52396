//! What a new host downloads from the server: `GET /install.sh` and the static agent binaries
//! with their published SHA-256 sums (`GET /downloads/stagely-agent-<arch>[.sha256]`).

use crate::ops::OpError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Architectures the server may have an agent binary for.
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];
const INSTALL_SCRIPT: &str = include_str!("install.sh");

/// `GET /install.sh`: the installer, with this server's URL filled in.
pub async fn install_script(State(state): State<AppState>) -> Response {
    let script = INSTALL_SCRIPT.replace("__STAGELY_URL__", &state.config.public_url);
    (
        [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")],
        script,
    )
        .into_response()
}

/// `GET /downloads/stagely-agent-<arch>` and `…-<arch>.sha256`.
pub async fn download(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, OpError> {
    let (name, sum) = match file.strip_suffix(".sha256") {
        Some(name) => (name, true),
        None => (file.as_str(), false),
    };
    let known = ARCHES
        .iter()
        .any(|arch| name == format!("stagely-agent-{arch}"));
    if !known {
        return Err(OpError::NotFound);
    }
    let path = state.config.downloads_dir.join(name);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // Where it was looked for is the operator's business, not the downloader's.
            tracing::warn!(path = %path.display(), "an agent binary was asked for but is missing: build it with scripts/build-agent.sh");
            return Err(OpError::Invalid(format!(
                "this server has no {name} to hand out; its operator can build it with scripts/build-agent.sh"
            )));
        }
        Err(error) => return Err(OpError::Internal(error.into())),
    };
    if sum {
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        return Ok((
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{hex}  {name}\n"),
        )
            .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
