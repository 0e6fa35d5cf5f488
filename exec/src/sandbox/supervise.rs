//! A started sandbox's life: its input fed, its output captured (capped), its end awaited
//! (exit, time limit or cancellation), then every process of its cgroup killed and reaped.

use std::io;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Outcome, RunResult, Sandbox};
use crate::cgroup::Cgroup;

impl Sandbox {
    /// Feeds a started sandbox its input, collects its output, and waits until it exits, the
    /// time limit passes or `cancel` fires; then until every process of its cgroup is gone.
    pub(super) async fn supervise(
        &self,
        cgroup: &Cgroup,
        mut child: tokio::process::Child,
        started: Instant,
        stdin: Option<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> io::Result<RunResult> {
        let limits = self.cfg.limits;
        // Without input the pipe closes here: the command reads end-of-file at once.
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
            tokio::spawn(async move {
                // The command may exit without reading its input; that is not an error.
                let _ = pipe.write_all(&bytes).await;
            });
        }
        let stdout = tokio::spawn(capture(child.stdout.take(), limits.output_bytes));
        let stderr = tokio::spawn(capture(child.stderr.take(), limits.output_bytes));

        let outcome = tokio::select! {
            status = child.wait() => Outcome::Exited(exit_code(status?)),
            _ = tokio::time::sleep(limits.timeout) => Outcome::TimedOut,
            _ = cancel.cancelled() => Outcome::Cancelled,
        };
        if !matches!(outcome, Outcome::Exited(_)) {
            // bwrap's death takes the sandbox's pid 1 with it (--die-with-parent), and with
            // it the whole pid namespace; the cgroup catches anything else.
            let _ = child.start_kill();
        }
        cgroup.kill_all().await?;
        let _ = child.wait().await;
        let duration = started.elapsed();
        let (stdout, stdout_truncated) = stdout.await.map_err(io::Error::other)??;
        let (stderr, stderr_truncated) = stderr.await.map_err(io::Error::other)??;
        Ok(RunResult {
            outcome,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            oom_killed: false,
            pids_exhausted: false,
            duration,
        })
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Reads a pipe to its end, keeping the first `cap` bytes; the rest is drained and dropped so
/// the writer never blocks on a full pipe.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> io::Result<(Vec<u8>, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap - kept.len();
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}
