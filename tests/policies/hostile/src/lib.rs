//! A deliberately hostile policy for the host's tests: the repository name picks the attack
//! (`hostile/loop`, `alloc`, `recurse`, `panic`, `overgrant`, `huge`, `leak`: 1 MiB kept
//! for good per decision, as a guest whose heap only grows); any other name gets a plain
//! `pull`. Settings `{"fail": "message"}` make the load fail with that message.

use portcullis_policy::{Decision, Policy, Request, export_policy};
use serde::Deserialize;

/// `{"fail": "..."}` fails the load.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    fail: Option<String>,
}

/// The configured policy.
pub struct Hostile;

impl Policy for Hostile {
    type Settings = Settings;

    fn configure(settings: Settings) -> Result<Self, String> {
        match settings.fail {
            Some(message) => Err(message),
            None => Ok(Hostile),
        }
    }

    fn authorize(&self, request: &Request) -> Decision {
        match request.scope.name.as_str() {
            "hostile/loop" => spin(),
            "hostile/alloc" => hoard(),
            "hostile/recurse" => Decision::deny(&format!("depth {}", recurse(0))),
            "hostile/panic" => panic!("the hostile policy panics on purpose"),
            "hostile/overgrant" => Decision {
                granted: vec!["pull".into(), "push".into(), "delete".into(), "*".into()],
                reason: None,
                rule: None,
            },
            "hostile/huge" => Decision::deny(&"x".repeat(64 << 20)),
            "hostile/leak" => {
                LEAKED.with_borrow_mut(|kept| kept.push(vec![1; 1 << 20]));
                request.grant(["pull"])
            }
            _ => request.grant(["pull"]),
        }
    }
}

export_policy!(Hostile);

std::thread_local! {
    /// What `hostile/leak` keeps: never freed while the instance lives.
    static LEAKED: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hoard() -> Decision {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![1; 1 << 20]);
        std::hint::black_box(&kept);
    }
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}
