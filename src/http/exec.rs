//! `POST /v1/exec` (structured) and the legacy `POST /exec` (plain text), spec §4.1–4.2.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, Runtime};
use super::{ApiResult, AppState};
use crate::services::exec::{ExecRequest, ExecResult, MAX_COMMAND_BYTES, MAX_STDIN_BYTES};

/// Room for the command, stdin (JSON-escaped, so up to 6 bytes per input byte) and framing;
/// the service checks each field against its own cap and answers 422.
pub const EXEC_BODY_LIMIT: usize = 6 * (MAX_STDIN_BYTES + MAX_COMMAND_BYTES) + 4096;

#[derive(Deserialize)]
pub struct ExecBody {
    command: String,
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

pub async fn exec(
    State(state): State<AppState>,
    rt: Runtime,
    ApiJson(body): ApiJson<ExecBody, EXEC_BODY_LIMIT>,
) -> ApiResult<Json<Value>> {
    let r = run(&state, &rt, body).await?;
    let mut out = json!({
        "exit_code": r.exit_code,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "duration_ms": r.duration_ms,
    });
    // Extensions, present only when they say something.
    if r.stdout_truncated {
        out["stdout_truncated"] = json!(true);
    }
    if r.stderr_truncated {
        out["stderr_truncated"] = json!(true);
    }
    if r.oom_killed {
        out["oom_killed"] = json!(true);
    }
    if !r.not_synced.is_empty() {
        out["not_synced"] = r
            .not_synced
            .iter()
            .map(|(p, why)| json!({ "path": format!("workspace/{p}"), "reason": why }))
            .collect();
    }
    Ok(Json(out))
}

/// The legacy text form: stdout on success; otherwise `[exit N]`, stderr, stdout.
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
