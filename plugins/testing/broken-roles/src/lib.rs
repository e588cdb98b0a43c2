//! A role assigner that misbehaves on purpose: `fail` = `loop` | `trap` |
//! `memory-bomb` | `error`, for every user or only the one whose anchor is
//! `when_anchor`. Other users get the role `ok`.

use roster_plugin_sdk::prelude::*;

struct Broken {
    fail: String,
    when_anchor: Option<String>,
}

impl RoleAssigner for Broken {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let fail = config.str("fail").ok().flatten().unwrap_or("trap").to_string();
        let when_anchor = config.str("when_anchor").ok().flatten().map(str::to_string);
        Ok(Broken { fail, when_anchor })
    }

    fn assign(&mut self, user: &UserGroups<'_>) -> Result<Vec<String>, String> {
        if self.when_anchor.as_deref().is_some_and(|a| a != user.anchor) {
            return Ok(vec!["ok".into()]);
        }
        match self.fail.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "error" => Err(format!("no roles for {}", user.anchor)),
            _ => panic!("role assigner gave up on {}", user.anchor),
        }
    }
}

roster_plugin_sdk::export_role_assigner!(Broken);
