//! Built straight against `wit/frozen/0.1.0` with wit-bindgen, as a plugin
//! released for Roster 0.1 was: `userName` = `legacy-` + uid. The host must
//! keep loading it after the WIT package moved on.

wit_bindgen::generate!({
    world: "mapper",
    path: "../../../wit/frozen/0.1.0",
});

use roster::plugin::types::Mapped;

struct Legacy;

impl Guest for Legacy {
    fn init(_config: Config) -> Result<PluginInfo, Vec<ConfigError>> {
        Ok(PluginInfo { name: "legacy-mapper".into(), version: "0.1.0".into() })
    }

    fn map(entries: Vec<Entry>) -> Vec<MapResult> {
        entries
            .iter()
            .map(|e| {
                let Ok(attrs) = roster_wire::Attrs::parse(&e.attributes) else {
                    return MapResult::Error("malformed attributes".into());
                };
                let uid = attrs.get("uid").and_then(|a| a.first()).map(|v| String::from_utf8_lossy(v).into_owned());
                let name = match (e.kind, uid) {
                    (roster::plugin::types::EntryKind::User, Some(uid)) => ("userName", format!("legacy-{uid}")),
                    (roster::plugin::types::EntryKind::Group, _) => ("displayName", format!("legacy-{}", e.anchor)),
                    (_, None) => return MapResult::Skip("no uid".into()),
                };
                MapResult::Mapped(Mapped {
                    kind: e.kind,
                    attributes: roster_wire::pack([(name.0, [name.1].as_slice())]),
                })
            })
            .collect()
    }
}

export!(Legacy);
