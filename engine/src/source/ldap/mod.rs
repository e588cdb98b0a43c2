//! `kind = "ldap"`: any LDAP v3 server through ldap3.
