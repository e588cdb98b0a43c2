//! TEMPORARY placeholder; replaced by the RFC 4514 implementation.
pub fn normalize_dn(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}
pub struct Dn(String);
impl Dn {
    pub fn parse(s: &str) -> Result<Dn, String> {
        Ok(Dn(normalize_dn(s)))
    }
    pub fn is_within(&self, base: &Dn) -> bool {
        self.0 == base.0 || self.0.ends_with(&format!(",{}", base.0))
    }
}
