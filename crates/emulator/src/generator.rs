//! Realistic Event traffic for demos and soak tests: deployments rolling out (ScalingReplicaSet,
//! SuccessfulCreate, Scheduled, Pulling, Pulled, Created, Started), images that fail to pull
//! (Failed, ErrImagePull, BackOff repeating), crash loops whose BackOff keeps counting, scale
//! downs, and nodes going NotReady and back. Deterministic for a given seed.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{Emulator, EventSpec};

/// How much traffic to make and where.
#[derive(Clone, Debug)]
pub struct GeneratorOptions {
    /// Writes (creates and repeats) per second.
    pub events_per_second: f64,
    /// Namespaces the workloads live in (Node events go to `default`).
    pub namespaces: Vec<String>,
    /// Seed for names and choices.
    pub seed: u64,
    /// Stop after this many writes (`None`: run until the emulator shuts down).
    pub max_events: Option<usize>,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            events_per_second: 5.0,
            namespaces: vec!["default".to_string(), "shop".to_string()],
            seed: 1,
            max_events: None,
        }
    }
}

/// One write the generator will make.
#[derive(Clone, Debug)]
enum Step {
    Create(EventSpec),
    /// A repeat of an event created earlier (by namespace and name).
    Bump(String, String),
}

/// Produces the sequence of writes; separate from timing so it can be tested directly.
pub struct Generator {
    rng: fastrand::Rng,
    namespaces: Vec<String>,
    active: Vec<VecDeque<Step>>,
}

const IMAGES: &[&str] = &[
    "nginx:1.25",
    "redis:7.2",
    "ghcr.io/shop/api:2.4.1",
    "busybox:1.36",
];
const BAD_IMAGES: &[&str] = &[
    "ghcr.io/shop/api:does-not-exist",
    "registry.local/web:latest",
];
const APPS: &[&str] = &["web", "api", "cart", "checkout", "worker", "search"];
const NODES: &[&str] = &["node-1", "node-2", "node-3"];

impl Generator {
    /// A generator with its own deterministic random source.
    pub fn new(opts: &GeneratorOptions) -> Generator {
        let namespaces = if opts.namespaces.is_empty() {
            vec!["default".to_string()]
        } else {
            opts.namespaces.clone()
        };
        Generator {
            rng: fastrand::Rng::with_seed(opts.seed),
            namespaces,
            active: Vec::new(),
        }
    }

    fn hex(&mut self) -> String {
        format!(
            "{:016x}",
            self.rng.u64(0x1000_0000_0000_0000..0x2000_0000_0000_0000)
        )
    }

    fn suffix(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..n)
            .map(|_| ALPHABET[self.rng.usize(..ALPHABET.len())] as char)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn spec(
        &mut self,
        ns: &str,
        kind: &str,
        obj: &str,
        reason: &str,
        message: String,
        warning: bool,
        component: &str,
        instance: &str,
        new_style: bool,
    ) -> (EventSpec, String) {
        let name = format!("{obj}.{}", self.hex());
        let spec = EventSpec {
            namespace: ns.to_string(),
            name: Some(name.clone()),
            involved_kind: kind.to_string(),
            involved_name: obj.to_string(),
            reason: reason.to_string(),
            message,
            type_: if warning { "Warning" } else { "Normal" }.to_string(),
            reporting_component: component.to_string(),
            reporting_instance: instance.to_string(),
            new_style,
            labels: Vec::new(),
        };
        (spec, name)
    }

    fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
        from[self.rng.usize(..from.len())]
    }

    fn rollout(&mut self, ns: &str) -> VecDeque<Step> {
        let app = self.pick(APPS);
        let rs = format!("{app}-{}", self.suffix(10));
        let replicas = self.rng.usize(1..=3);
        let image = self.pick(IMAGES);
        let mut steps = VecDeque::new();
        let (s, _) = self.spec(
            ns,
            "Deployment",
            app,
            "ScalingReplicaSet",
            format!("Scaled up replica set {rs} to {replicas}"),
            false,
            "deployment-controller",
            "",
            false,
        );
        steps.push_back(Step::Create(s));
        for _ in 0..replicas {
            let pod = format!("{rs}-{}", self.suffix(5));
            let node = self.pick(NODES);
            let (s, _) = self.spec(
                ns,
                "ReplicaSet",
                &rs,
                "SuccessfulCreate",
                format!("Created pod: {pod}"),
                false,
                "replicaset-controller",
                "",
                false,
            );
            steps.push_back(Step::Create(s));
            let (s, _) = self.spec(
                ns,
                "Pod",
                &pod,
                "Scheduled",
                format!("Successfully assigned {ns}/{pod} to {node}"),
                false,
                "default-scheduler",
                "default-scheduler-control-plane",
                true,
            );
            steps.push_back(Step::Create(s));
            let ms = self.rng.u32(300..4000);
            for (reason, message) in [
                ("Pulling", format!("Pulling image \"{image}\"")),
                (
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {ms}ms ({ms}ms including waiting)"
                    ),
                ),
                ("Created", format!("Created container {app}")),
                ("Started", format!("Started container {app}")),
            ] {
                let (s, _) = self.spec(
                    ns, "Pod", &pod, reason, message, false, "kubelet", node, false,
                );
                steps.push_back(Step::Create(s));
            }
        }
        steps
    }

    fn image_pull_failure(&mut self, ns: &str) -> VecDeque<Step> {
        let app = self.pick(APPS);
        let pod = format!("{app}-{}-{}", self.suffix(10), self.suffix(5));
        let image = self.pick(BAD_IMAGES);
        let node = self.pick(NODES);
        let mut steps = VecDeque::new();
        let (s, _) = self.spec(
            ns,
            "Pod",
            &pod,
            "Scheduled",
            format!("Successfully assigned {ns}/{pod} to {node}"),
            false,
            "default-scheduler",
            "default-scheduler-control-plane",
            true,
        );
        steps.push_back(Step::Create(s));
        let (s, pulling) = self.spec(
            ns,
            "Pod",
            &pod,
            "Pulling",
            format!("Pulling image \"{image}\""),
            false,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        let (s, failed) = self.spec(ns, "Pod", &pod, "Failed", format!("Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"), true, "kubelet", node, false);
        steps.push_back(Step::Create(s));
        let (s, err) = self.spec(
            ns,
            "Pod",
            &pod,
            "Failed",
            "Error: ErrImagePull".to_string(),
            true,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        let (s, backoff) = self.spec(
            ns,
            "Pod",
            &pod,
            "BackOff",
            format!("Back-off pulling image \"{image}\""),
            false,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        let (s, pull_backoff) = self.spec(
            ns,
            "Pod",
            &pod,
            "Failed",
            "Error: ImagePullBackOff".to_string(),
            true,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        for _ in 0..self.rng.usize(2..6) {
            for name in [&pulling, &failed, &err, &backoff, &pull_backoff] {
                if self.rng.bool() || name == &backoff {
                    steps.push_back(Step::Bump(ns.to_string(), name.clone()));
                }
            }
        }
        steps
    }

    fn crash_loop(&mut self, ns: &str) -> VecDeque<Step> {
        let app = self.pick(APPS);
        let pod = format!("{app}-{}-{}", self.suffix(10), self.suffix(5));
        let node = self.pick(NODES);
        let image = self.pick(IMAGES);
        let mut steps = VecDeque::new();
        for (reason, message) in [
            (
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            ("Created", format!("Created container {app}")),
            ("Started", format!("Started container {app}")),
        ] {
            let (s, _) = self.spec(
                ns, "Pod", &pod, reason, message, false, "kubelet", node, false,
            );
            steps.push_back(Step::Create(s));
        }
        let (s, backoff) = self.spec(
            ns,
            "Pod",
            &pod,
            "BackOff",
            format!("Back-off restarting failed container {app} in pod {pod}_{ns}"),
            true,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        for _ in 0..self.rng.usize(3..10) {
            steps.push_back(Step::Bump(ns.to_string(), backoff.clone()));
        }
        steps
    }

    fn scale_down(&mut self, ns: &str) -> VecDeque<Step> {
        let app = self.pick(APPS);
        let rs = format!("{app}-{}", self.suffix(10));
        let pod = format!("{rs}-{}", self.suffix(5));
        let node = self.pick(NODES);
        let mut steps = VecDeque::new();
        let (s, _) = self.spec(
            ns,
            "Deployment",
            app,
            "ScalingReplicaSet",
            format!("Scaled down replica set {rs} to 1 from 2"),
            false,
            "deployment-controller",
            "",
            false,
        );
        steps.push_back(Step::Create(s));
        let (s, _) = self.spec(
            ns,
            "ReplicaSet",
            &rs,
            "SuccessfulDelete",
            format!("Deleted pod: {pod}"),
            false,
            "replicaset-controller",
            "",
            false,
        );
        steps.push_back(Step::Create(s));
        let (s, _) = self.spec(
            ns,
            "Pod",
            &pod,
            "Killing",
            format!("Stopping container {app}"),
            false,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        steps
    }

    fn node_flap(&mut self) -> VecDeque<Step> {
        let node = self.pick(NODES);
        let mut steps = VecDeque::new();
        let (s, _) = self.spec(
            "default",
            "Node",
            node,
            "NodeNotReady",
            format!("Node {node} status is now: NodeNotReady"),
            true,
            "node-controller",
            "",
            false,
        );
        steps.push_back(Step::Create(s));
        let (s, _) = self.spec(
            "default",
            "Node",
            node,
            "NodeReady",
            format!("Node {node} status is now: NodeReady"),
            false,
            "kubelet",
            node,
            false,
        );
        steps.push_back(Step::Create(s));
        steps
    }

    fn new_scenario(&mut self) -> VecDeque<Step> {
        let ns = self.namespaces[self.rng.usize(..self.namespaces.len())].clone();
        match self.rng.u32(0..10) {
            0..=3 => self.rollout(&ns),
            4..=5 => self.image_pull_failure(&ns),
            6..=7 => self.crash_loop(&ns),
            8 => self.scale_down(&ns),
            _ => self.node_flap(),
        }
    }

    /// The next write, interleaving up to three scenarios at a time.
    fn next_step(&mut self) -> Step {
        while self.active.len() < 3 {
            let s = self.new_scenario();
            self.active.push(s);
        }
        loop {
            let i = self.rng.usize(..self.active.len());
            if let Some(step) = self.active[i].pop_front() {
                if self.active[i].is_empty() {
                    self.active.swap_remove(i);
                }
                return step;
            }
            self.active.swap_remove(i);
            let s = self.new_scenario();
            self.active.push(s);
        }
    }

    /// Makes the next write on `emu`.
    pub fn write_next(&mut self, emu: &Emulator) {
        match self.next_step() {
            Step::Create(spec) => {
                emu.create_event(spec);
            }
            Step::Bump(ns, name) => {
                // The event may have expired or been deleted meanwhile; that is fine.
                let _ = emu.bump_event(&ns, &name);
            }
        }
    }
}

/// Runs a [`Generator`] at `events_per_second` until `max_events` or emulator shutdown.
pub fn spawn(emu: Emulator, opts: GeneratorOptions) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut generator = Generator::new(&opts);
        let rate = if opts.events_per_second.is_finite() && opts.events_per_second > 0.0 {
            opts.events_per_second
        } else {
            1.0
        };
        // Tick at the event rate, but no faster than every 10 ms; spread the budget.
        let tick = Duration::from_secs_f64((1.0 / rate).max(0.01));
        let per_tick = rate * tick.as_secs_f64();
        let mut budget = 0.0f64;
        let mut written = 0usize;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if emu.is_shut_down() {
                return;
            }
            budget += per_tick;
            while budget >= 1.0 {
                budget -= 1.0;
                if opts.max_events.is_some_and(|m| written >= m) {
                    return;
                }
                generator.write_next(&emu);
                written += 1;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(seed: u64, n: usize) -> Vec<String> {
        let mut g = Generator::new(&GeneratorOptions {
            seed,
            ..GeneratorOptions::default()
        });
        (0..n)
            .map(|_| match g.next_step() {
                Step::Create(s) => format!(
                    "C {} {} {} {}",
                    s.namespace,
                    s.reason,
                    s.type_,
                    s.name.unwrap_or_default()
                ),
                Step::Bump(ns, n) => format!("B {ns} {n}"),
            })
            .collect()
    }

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(steps(7, 200), steps(7, 200));
        assert_ne!(steps(7, 200), steps(8, 200));
    }

    #[test]
    fn covers_the_realistic_reasons_and_both_types() {
        let all = steps(3, 2000).join("\n");
        for reason in [
            "ScalingReplicaSet",
            "SuccessfulCreate",
            " Scheduled ",
            "Pulling",
            "Pulled",
            " Created ",
            "Started",
            " Failed ",
            "BackOff",
            "NodeNotReady",
            "Killing",
        ] {
            assert!(all.contains(reason), "missing {reason}");
        }
        assert!(all.contains(" Warning "));
        assert!(all.contains(" Normal "));
        assert!(
            all.lines().any(|l| l.starts_with("B ")),
            "repeats bump events"
        );
    }
}
