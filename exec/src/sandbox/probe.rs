//! What a host needs to run sandboxes, checked once at start-up, ending with one real sandbox.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::{Outcome, Sandbox, SandboxConfig, random_name};
use crate::cgroup::Cgroups;

/// Why this host cannot run sandboxes: what is missing, said so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "exec needs the server to run as root, to start each sandbox as a dedicated \
         unprivileged uid in its own cgroup"
    )]
    NotRoot,
    #[error("bubblewrap not found at {} (install the bubblewrap package)", .0.display())]
    NoBubblewrap(PathBuf),
    #[error("the sandbox uid and gid must not be 0")]
    RootSandboxUser,
    /// The exec directory cannot be made, or the sandbox uid cannot reach it.
    #[error("{0}")]
    ExecDir(String),
    /// No usable cgroup hierarchy (v2 with the memory, pids and cpu controllers).
    #[error("{0}")]
    Cgroups(String),
    #[error("{0}")]
    Seccomp(String),
    /// Everything looked present, but a real sandbox failed to run.
    #[error("{0}")]
    SelfTest(String),
}

impl Sandbox {
    /// Checks everything a sandbox needs, and runs one.
    pub async fn probe(cfg: SandboxConfig) -> Result<Self, Unavailable> {
        if !rustix::process::geteuid().is_root() {
            return Err(Unavailable::NotRoot);
        }
        if !cfg.bwrap.is_file() {
            return Err(Unavailable::NoBubblewrap(cfg.bwrap));
        }
        if cfg.uid == 0 || cfg.gid == 0 {
            return Err(Unavailable::RootSandboxUser);
        }
        prepare_base_dir(&cfg.base_dir).map_err(Unavailable::ExecDir)?;
        // Working copies are only known to the process that made them: what an earlier run
        // left (after a crash or restart) is garbage.
        crate::overlay::clean_stale_mounts(&cfg.base_dir);
        if let Ok(entries) = std::fs::read_dir(&cfg.base_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let cgroups = Cgroups::detect().map_err(Unavailable::Cgroups)?;
        let swept = cgroups.sweep_stale();
        if swept > 0 {
            tracing::info!(swept, "removed exec cgroups an earlier run left behind");
        }
        let filters = crate::seccomp::filters().map_err(Unavailable::Seccomp)?;
        let sandbox = Self {
            cfg,
            cgroups,
            filters,
            ready: std::sync::Mutex::new(Vec::new()),
        };
        sandbox.self_test().await.map_err(Unavailable::SelfTest)?;
        Ok(sandbox)
    }

    async fn self_test(&self) -> Result<(), String> {
        let empty = self.cfg.base_dir.join(format!("probe-{}", random_name()));
        let wc = crate::WorkCopy::create(empty, self.owner()).map_err(|e| e.to_string())?;
        let result = async {
            let overlay =
                crate::Overlay::mount(self.run_dir(), wc.path(), self.owner(), 1 << 20, 1024)
                    .map_err(|e| format!("cannot mount the exec overlay: {e}"))?;
            let r = self
                .run(
                    overlay.merged(),
                    "touch workspace/ok",
                    None,
                    &CancellationToken::new(),
                )
                .await
                .map_err(|e| format!("cannot start bubblewrap: {e}"))?;
            if r.outcome != Outcome::Exited(0) {
                return Err(format!(
                    "bubblewrap cannot create a sandbox here ({:?}): {}",
                    r.outcome,
                    String::from_utf8_lossy(&r.stderr).trim()
                ));
            }
            Ok(())
        }
        .await;
        wc.destroy();
        result
    }
}

/// Makes the base directory, mode 0711, and checks the sandbox uid can reach it: bwrap, running
/// as that uid, resolves the workspace path itself.
fn prepare_base_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    // Each directory made here is 0711 whatever the umask, so the path stays traversable.
    let dir = &std::path::absolute(dir).map_err(|e| e.to_string())?;
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    for d in missing.into_iter().rev().chain([dir.as_path()]) {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("cannot set the mode of {}: {e}", d.display()))?;
    }
    let abs = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    match closed_ancestor(&abs) {
        None => Ok(()),
        Some(a) => Err(format!(
            "the exec directory {} is below {}, which other users cannot traverse; \
             choose another --exec-dir",
            dir.display(),
            a.display()
        )),
    }
}

/// The nearest existing ancestor of `dir` that other users cannot traverse (no o+x), if any:
/// below one, the sandbox uid cannot reach a working copy. Components that do not exist yet
/// do not count, as [`Sandbox::probe`] creates them traversable.
pub fn closed_ancestor(dir: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().skip(1).find_map(|a| {
        let mode = std::fs::metadata(a).ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| a.to_path_buf())
    })
}
