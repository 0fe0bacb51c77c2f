//! The shutdown signal shared by every task: a latch that fires once.

use tokio::sync::watch;

/// Fires once when the agent must stop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that fires the signal.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A new signal and its trigger.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }

    /// A receiver for a new task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the signal fires (at once if it already has).
    pub async fn fired(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger was dropped, which also means stop.
        let _ = rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_for_all() {
        let (t, s) = channel();
        let s2 = t.subscribe();
        assert!(!s.is_fired());
        t.fire();
        s.fired().await;
        s2.fired().await;
        assert!(s2.is_fired());
    }

    #[tokio::test]
    async fn dropped_trigger_means_stop() {
        let (t, s) = channel();
        drop(t);
        s.fired().await;
    }
}
