//! The PKCS#11 suite against embedded slots (or `SoftHSMv2`): each test gets a fresh token. The
//! bodies live in `suite/mod.rs`, shared with `p11_remote.rs`.

#![allow(missing_docs)]

mod common;
mod suite;

macro_rules! wrap {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                suite::$name();
            }
        )*
    };
}

crate::for_each_p11_test!(wrap);
