//! Child processes that never outlive their test: whatever way a test ends (a failed assert
//! included), a `Reaped` child still running is killed and reaped.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub struct Reaped {
    child: Child,
    exited: bool,
}

impl Reaped {
    pub fn new(child: Child) -> Reaped {
        Reaped {
            child,
            exited: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, for its pipes and `try_wait`.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` (`TERM`, `INT`, …) with kill(1) and returns at once.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// `kill -9` and reap: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the killed process");
        self.exited = true;
    }

    /// Waits up to `timeout` for the process to exit; `None` (and killed) if it did not.
    pub fn wait_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_with_timeout(&mut self.child, timeout);
        self.exited = true;
        status
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `timeout` for `child` to exit; kills it and returns `None` if it did not.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
