//! The one set of size limits every front door applies: the PKCS#11 module (C templates), the
//! daemon's two gRPC APIs (label-based and PKCS#11-shaped), the remote PKCS#11 codec and the
//! CLI. A request that one door refuses is refused by all of them, with the same error kind.
//!
//! Labels may hold any bytes (PKCS#11 says so); they are bounded here and escaped wherever a
//! person reads them ([`crate::display`]). User names are stricter: they appear in log lines,
//! audit records and tables, so they are a small ASCII alphabet without control characters.

use crate::attr::{AttrType, AttrValue};
use crate::error::{Error, Result};

/// Longest object label (`CKA_LABEL`), in bytes.
pub const MAX_LABEL: usize = 256;
/// Longest object identifier (`CKA_ID`), in bytes.
pub const MAX_ID: usize = 256;
/// Longest token label, in bytes (`CK_TOKEN_INFO.label` is 32 bytes).
pub const MAX_TOKEN_LABEL: usize = 32;
/// Most attributes in one template.
pub const MAX_TEMPLATE_ATTRS: usize = 64;
/// Longest value of any other byte-string attribute (a certificate, a public key, a data
/// object's value), in bytes.
pub const MAX_ATTR_VALUE: usize = 64 * 1024;
/// Most input data in one operation (a message to sign, a plaintext, a ciphertext).
pub const MAX_DATA: usize = 1 << 20;
/// Most items in one batch request.
pub const MAX_BATCH: usize = 1024;
/// Most random bytes in one request.
pub const MAX_RANDOM: usize = 1 << 20;
/// Longest user name, in bytes.
pub const MAX_USER_NAME: usize = 64;
/// Largest gRPC message either side accepts: one operation's data and its result plus room
/// for framing, templates and metadata. Batches must fit in it as a whole.
pub const MAX_MESSAGE: usize = 2 * MAX_DATA + 256 * 1024;

/// Checks an object label's length (its bytes are free-form).
///
/// # Errors
/// `AttributeValueInvalid(Label)` when longer than [`MAX_LABEL`].
pub fn check_label(label: &[u8]) -> Result<()> {
    if label.len() > MAX_LABEL {
        return Err(Error::AttributeValueInvalid(AttrType::Label));
    }
    Ok(())
}

/// Checks the length of one attribute value arriving from a caller.
///
/// # Errors
/// `AttributeValueInvalid(t)` when the value is longer than its limit.
pub fn check_attr_len(t: AttrType, len: usize) -> Result<()> {
    let max = match t {
        AttrType::Label => MAX_LABEL,
        AttrType::Id => MAX_ID,
        _ => MAX_ATTR_VALUE,
    };
    if len > max {
        return Err(Error::AttributeValueInvalid(t));
    }
    Ok(())
}

/// Checks a template's size and every value in it.
///
/// # Errors
/// `TemplateInconsistent` for more than [`MAX_TEMPLATE_ATTRS`] attributes, else as
/// [`check_attr_len`].
pub fn check_template(t: &[(AttrType, AttrValue)]) -> Result<()> {
    check_template_len(t.len())?;
    for (k, v) in t {
        if let AttrValue::Bytes(b) = v {
            check_attr_len(*k, b.len())?;
        }
    }
    Ok(())
}

/// Checks the number of attributes in a template before parsing it.
///
/// # Errors
/// `TemplateInconsistent` for more than [`MAX_TEMPLATE_ATTRS`].
pub fn check_template_len(n: usize) -> Result<()> {
    if n > MAX_TEMPLATE_ATTRS {
        return Err(Error::TemplateInconsistent("too many attributes in one template"));
    }
    Ok(())
}

/// Checks one operation's input data length.
///
/// # Errors
/// `DataLenRange` when longer than [`MAX_DATA`].
pub fn check_data(len: usize) -> Result<()> {
    if len > MAX_DATA {
        return Err(Error::DataLenRange);
    }
    Ok(())
}

/// Checks a batch's item count.
///
/// # Errors
/// `ArgumentsBad` for an empty batch or one of more than [`MAX_BATCH`] items.
pub fn check_batch(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::ArgumentsBad("a batch holds 1 to 1024 items"));
    }
    Ok(())
}

/// Checks a random-bytes request.
///
/// # Errors
/// `ArgumentsBad` for 0 or more than [`MAX_RANDOM`] bytes.
pub fn check_random(n: usize) -> Result<()> {
    if n == 0 || n > MAX_RANDOM {
        return Err(Error::ArgumentsBad("random length must be 1 to 1048576 bytes"));
    }
    Ok(())
}

/// Checks a user name: 1 to [`MAX_USER_NAME`] characters of `A-Z a-z 0-9 - _ . @`. No
/// control character, space or non-ASCII letter can reach a log line, an audit record or a
/// table through a user name.
///
/// # Errors
/// `ArgumentsBad` otherwise.
pub fn check_user_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_USER_NAME
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(Error::ArgumentsBad("user names are 1 to 64 characters of [A-Za-z0-9-_.@]"));
    }
    Ok(())
}

/// Checks a token label: 1 to [`MAX_TOKEN_LABEL`] bytes.
///
/// # Errors
/// `ArgumentsBad` otherwise.
pub fn check_token_label(label: &str) -> Result<()> {
    if label.is_empty() || label.len() > MAX_TOKEN_LABEL {
        return Err(Error::ArgumentsBad("token label must be 1 to 32 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_but_free_form() {
        assert!(check_label(&[0x1b, b'[', b'2', b'J', 0, 0xff]).is_ok());
        assert!(check_label(&vec![b'a'; MAX_LABEL]).is_ok());
        assert!(matches!(
            check_label(&vec![b'a'; MAX_LABEL + 1]),
            Err(Error::AttributeValueInvalid(AttrType::Label))
        ));
        assert!(check_attr_len(AttrType::Id, MAX_ID + 1).is_err());
        assert!(check_attr_len(AttrType::Value, MAX_ATTR_VALUE).is_ok());
        assert!(check_attr_len(AttrType::Value, MAX_ATTR_VALUE + 1).is_err());
    }

    #[test]
    fn templates_are_bounded() {
        let one = (AttrType::Label, AttrValue::Bytes(b"k".to_vec()));
        assert!(check_template(&vec![one.clone(); MAX_TEMPLATE_ATTRS]).is_ok());
        assert!(check_template(&vec![one; MAX_TEMPLATE_ATTRS + 1]).is_err());
        let big = (AttrType::Label, AttrValue::Bytes(vec![b'x'; 3 << 20]));
        assert!(check_template(&[big]).is_err());
    }

    #[test]
    fn user_names_have_no_control_characters() {
        for bad in ["", "a\nb", "a\rb", "a\u{1b}[31mb", "a b", "é", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        for good in ["so", "alice@example.org", "crypto_user-1.x", &"a".repeat(64)] {
            assert!(check_user_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn data_batches_and_random() {
        assert!(check_data(MAX_DATA).is_ok() && check_data(MAX_DATA + 1).is_err());
        assert!(check_batch(0).is_err() && check_batch(MAX_BATCH + 1).is_err());
        assert!(check_random(0).is_err() && check_random(MAX_RANDOM + 1).is_err());
        assert!(check_random(MAX_RANDOM).is_ok());
        const { assert!(MAX_MESSAGE > MAX_DATA * 2) };
    }
}
