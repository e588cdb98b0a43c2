//! AD's binary attribute formats as text: objectGUID, objectSid, FILETIME.

/// objectGUID (16 bytes, the first three fields little-endian) in the
/// canonical form Windows shows: `5f1b0d9e-3c1a-4e2b-9f00-1a2b3c4d5e6f`.
pub fn guid(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// objectSid (revision, count, 48-bit authority big-endian, sub-authorities
/// little-endian) as `S-1-5-21-…`.
pub fn sid(b: &[u8]) -> Option<String> {
    if b.len() < 8 {
        return None;
    }
    let count = b[1] as usize;
    if b.len() != 8 + 4 * count {
        return None;
    }
    let authority = b[2..8].iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
    let mut s = format!("S-{}-{authority}", b[0]);
    for i in 0..count {
        let o = 8 + 4 * i;
        let sub = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        s.push_str(&format!("-{sub}"));
    }
    Some(s)
}

/// The relative id (last sub-authority) and the domain part of a SID string.
pub fn split_rid(sid: &str) -> Option<(&str, u32)> {
    let (domain, rid) = sid.rsplit_once('-')?;
    Some((domain, rid.parse().ok()?))
}

/// `userAccountControl` bit: the account is disabled.
pub const ACCOUNTDISABLE: u32 = 0x2;

/// Whether an account may sign in now, from `userAccountControl` and
/// `accountExpires` (FILETIME: 100 ns since 1601-01-01 UTC; 0 and
/// 0x7FFFFFFFFFFFFFFF mean never).
pub fn is_active(user_account_control: Option<&str>, account_expires: Option<&str>, now_unix_secs: i64) -> bool {
    let disabled = user_account_control.and_then(|v| v.trim().parse::<i64>().ok()).is_some_and(|uac| {
        // A signed 32-bit value on the wire; the bit test is the same either way.
        (uac as u32) & ACCOUNTDISABLE != 0
    });
    if disabled {
        return false;
    }
    match account_expires.and_then(|v| v.trim().parse::<i64>().ok()) {
        None | Some(0) | Some(i64::MAX) => true,
        Some(filetime) => filetime > unix_to_filetime(now_unix_secs),
    }
}

pub fn unix_to_filetime(secs: i64) -> i64 {
    (secs + 11_644_473_600).saturating_mul(10_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_and_sid_text_forms() {
        let b = [0x9e, 0x0d, 0x1b, 0x5f, 0x1a, 0x3c, 0x2b, 0x4e, 0x9f, 0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f];
        assert_eq!(guid(&b).as_deref(), Some("5f1b0d9e-3c1a-4e2b-9f00-1a2b3c4d5e6f"));
        assert_eq!(guid(&b[..15]), None);
        // S-1-5-21-1-2-3-1104
        let mut s = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, 1104] {
            s.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(sid(&s).as_deref(), Some("S-1-5-21-1-2-3-1104"));
        assert_eq!(split_rid("S-1-5-21-1-2-3-1104"), Some(("S-1-5-21-1-2-3", 1104)));
        assert_eq!(sid(&s[..10]), None);
    }

    #[test]
    fn activity_from_uac_and_expiry() {
        let now = 1_700_000_000;
        assert!(is_active(Some("512"), Some("9223372036854775807"), now));
        assert!(!is_active(Some("514"), None, now), "ACCOUNTDISABLE");
        assert!(!is_active(Some("512"), Some(&unix_to_filetime(now - 60).to_string()), now), "expired");
        assert!(is_active(Some("512"), Some(&unix_to_filetime(now + 60).to_string()), now));
        assert!(is_active(Some("66048"), Some("0"), now), "DONT_EXPIRE_PASSWORD, never expires");
    }
}
