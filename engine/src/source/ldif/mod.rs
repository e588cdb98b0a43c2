//! `kind = "ldif"`: RFC 2849 content records from a file.
