//! bcrypt password hashes.
//!
//! Hashing is slow on purpose and salted at random, so it never runs in
//! the apply loop: the member that receives `UserAdd` or
//! `UserChangePassword` hashes the password first and proposes only the
//! hash (etcd 3.5 does the same, in the request's `hashedPassword` field);
//! every member then stores the same hash. Verification also runs outside
//! raft, on the member that receives `Authenticate`.
//!
//! Compatibility with etcd: etcd (Go's bcrypt) writes `$2a$` hashes and
//! silently uses only the first 72 bytes of a password (etcd 3.4.23 accepts
//! a 75-byte password and authenticates its 72-byte prefix: checked). We
//! write `$2a$` too and truncate the same way, so hashes move between the
//! two verbatim.

use super::AuthError;

/// bcrypt's cost bounds (etcd's `--bcrypt-cost` accepts the same range).
pub const MIN_BCRYPT_COST: u32 = 4;
pub const MAX_BCRYPT_COST: u32 = 31;
/// etcd's default `--bcrypt-cost`.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// Checks a `--bcrypt-cost` value.
pub fn check_cost(cost: u32) -> Result<(), AuthError> {
    if (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        Ok(())
    } else {
        Err(AuthError::InvalidBcryptCost(cost))
    }
}

/// Hashes `password` with a fresh random salt (`$2a$<cost>$…`, 60 ASCII
/// characters). Run it on the proposing member, never inside apply.
pub fn hash_password(password: &str, cost: u32) -> Result<String, AuthError> {
    check_cost(cost)?;
    let parts = bcrypt::hash_with_result(password.as_bytes(), cost)
        .map_err(|e| AuthError::Internal(format!("bcrypt: {e}")))?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA))
}

/// True if `password` matches `hash`. A malformed hash matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    bcrypt::verify(password.as_bytes(), hash).unwrap_or(false)
}

/// Cheap structural check that `s` is a bcrypt hash (so a plain password
/// proposed by mistake is refused by apply instead of stored).
pub(crate) fn looks_like_bcrypt(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 60
        && b[0] == b'$'
        && b[1] == b'2'
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_password("s3cret", MIN_BCRYPT_COST).unwrap();
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(looks_like_bcrypt(&h));
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3creT"));
        assert!(!verify_password(&h, ""));
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash_password("s3cret", MIN_BCRYPT_COST).unwrap());
    }

    #[test]
    fn cost_bounds() {
        assert_eq!(
            hash_password("x", 3).unwrap_err(),
            AuthError::InvalidBcryptCost(3)
        );
        assert_eq!(
            hash_password("x", 32).unwrap_err(),
            AuthError::InvalidBcryptCost(32)
        );
        assert!(check_cost(MIN_BCRYPT_COST).is_ok());
        assert!(check_cost(MAX_BCRYPT_COST).is_ok());
        assert!(check_cost(DEFAULT_BCRYPT_COST).is_ok());
    }

    #[test]
    fn verifies_hashes_written_by_etcd() {
        // Read out of an etcd 3.4.23 data dir after `user add root:rootpw`
        // and `user add empty` with an empty password (default cost 10).
        let root = "$2a$10$HbZG3OKbc8r2yTBqxA1Ys.u0/4DOxbNzEfiKxWUcV9Afd7BC.jBfy";
        assert!(verify_password(root, "rootpw"));
        assert!(!verify_password(root, "rootpw "));
        let empty = "$2a$10$CCo4ZdYnnmTZPtrFXXa48.u8bBTMlr.rTnkPJF6TZa6Cw.j8iw5de";
        assert!(verify_password(empty, ""));
    }

    #[test]
    fn long_passwords_use_their_first_72_bytes_like_etcd() {
        let long = "a".repeat(75);
        let h = hash_password(&long, MIN_BCRYPT_COST).unwrap();
        assert!(verify_password(&h, &long));
        assert!(verify_password(&h, &"a".repeat(72)));
        assert!(!verify_password(&h, &"a".repeat(71)));
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        for bad in ["", "rootpw", "$2a$10$short", "$9z$10$", "\u{1F600}"] {
            assert!(!verify_password(bad, "rootpw"));
            assert!(!verify_password(bad, ""));
            assert!(!looks_like_bcrypt(bad));
        }
    }
}
