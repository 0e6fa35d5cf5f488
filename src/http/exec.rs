//! `POST /v1/exec` (structured) and the legacy `POST /exec` (plain text), spec §4.1–4.2.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{ApiJson, Runtime};
use super::wire::{ExecOutput, NotSynced};
use super::{ApiResult, AppState};
use crate::services::exec::{ExecRequest, ExecResult, MAX_COMMAND_BYTES, MAX_STDIN_BYTES};

/// Room for the command, stdin (JSON-escaped, so up to 6 bytes per input byte) and framing;
/// the service checks each field against its own cap and answers 422.
pub const EXEC_BODY_LIMIT: usize = 6 * (MAX_STDIN_BYTES + MAX_COMMAND_BYTES) + 4096;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ExecBody {
    /// A shell command, run by `bash -c` in the namespace's sandbox (cwd holds `workspace/`).
    command: String,
    /// Fed to the command's standard input (at most 1 MB).
    #[serde(default)]
    stdin: Option<String>,
}

/// Runs the exec on a task of its own and waits for it. A client that goes away drops this
/// future, not the exec: the command finishes, its changes are synced and its
/// `exec.completed` recorded, so nothing an agent ran escapes the record.
async fn run(state: &AppState, rt: &Runtime, body: ExecBody) -> ApiResult<ExecResult> {
    let (state, caller, ns) = (state.clone(), rt.caller.clone(), rt.ns.clone());
    let task = tokio::spawn(async move {
        state
            .exec
            .run(
                &caller,
                &ns,
                ExecRequest {
                    command: body.command,
                    stdin: body.stdin,
                },
            )
            .await
    });
    match task.await {
        Ok(result) => Ok(result?),
        Err(e) => {
            Err(crate::services::Error::Internal(format!("the exec task failed: {e}")).into())
        }
    }
}

/// Runs a command in a sandbox that sees only this namespace, then keeps what it changed.
#[utoipa::path(
    post, path = "/v1/exec", tag = "exec",
    request_body = ExecBody,
    responses((status = 200, body = ExecOutput)),
)]
pub async fn exec(
    State(state): State<AppState>,
    rt: Runtime,
    ApiJson(body): ApiJson<ExecBody, EXEC_BODY_LIMIT>,
) -> ApiResult<Json<ExecOutput>> {
    let r = run(&state, &rt, body).await?;
    Ok(Json(ExecOutput {
        exit_code: r.exit_code,
        stdout: r.stdout,
        stderr: r.stderr,
        duration_ms: r.duration_ms,
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        oom_killed: r.oom_killed,
        not_synced: r
            .not_synced
            .into_iter()
            .map(|(p, reason)| NotSynced {
                path: format!("workspace/{p}"),
                reason,
            })
            .collect(),
    }))
}

/// The legacy text form: stdout on success; otherwise `[exit N]`, stderr, stdout.
#[utoipa::path(
    post, path = "/exec", tag = "exec",
    request_body = ExecBody,
    responses((status = 200, description = "The command's output", content_type = "text/plain", body = String)),
)]
pub async fn exec_text(
    State(state): State<AppState>,
    rt: Runtime,
    ApiJson(body): ApiJson<ExecBody, EXEC_BODY_LIMIT>,
) -> ApiResult<Response> {
    let r = run(&state, &rt, body).await?;
    let text = if r.exit_code == 0 {
        if r.stdout.is_empty() {
            "(no output)".to_owned()
        } else {
            r.stdout
        }
    } else {
        format!("[exit {}]\n{}\n{}", r.exit_code, r.stderr, r.stdout)
    };
    Ok(([("content-type", "text/plain; charset=utf-8")], text).into_response())
}
