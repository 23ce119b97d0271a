//! Feishu's event encryption and signature.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::WebhookError;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Decrypts an `encrypt` field: base64 of IV (16 bytes) + AES-256-CBC ciphertext (PKCS#7),
/// with key = SHA-256(encrypt_key).
pub fn decrypt(encrypt_key: &str, encrypted: &str) -> Result<Vec<u8>, WebhookError> {
    let bad = |what: &str| WebhookError::BadRequest(format!("cannot decrypt the event: {what}"));
    let data = base64::engine::general_purpose::STANDARD
        .decode(encrypted.trim())
        .map_err(|_| bad("not base64"))?;
    if data.len() < 32 || data.len() % 16 != 0 {
        return Err(bad("wrong length"));
    }
    let (iv, ciphertext) = data.split_at(16);
    let key = Sha256::digest(encrypt_key.as_bytes());
    let decryptor =
        Aes256CbcDec::new_from_slices(&key, iv).map_err(|_| bad("bad key or IV length"))?;
    decryptor
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| bad("wrong key or corrupt data"))
}

/// `X-Lark-Signature`: lowercase hex of SHA-256(timestamp + nonce + encrypt_key + body).
pub fn event_signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(timestamp.as_bytes());
    digest.update(nonce.as_bytes());
    digest.update(encrypt_key.as_bytes());
    digest.update(body);
    hex::encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_vector_decrypts() {
        let plain = decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap();
        assert_eq!(plain, b"hello world");
        assert!(decrypt("other key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").is_err());
        assert!(decrypt("test key", "not base64!").is_err());
        assert!(decrypt("test key", "AAAA").is_err());
    }

    #[test]
    fn signatures_are_sha256_hex() {
        let signature = event_signature("1700000000", "n1", "key", b"{}");
        let expected = hex::encode(Sha256::digest(b"1700000000n1key{}"));
        assert_eq!(signature, expected);
    }

    /// Feishu's side: AES-256-CBC with a random-looking IV in front, base64.
    fn encrypt(key: &str, iv: [u8; 16], plain: &[u8]) -> String {
        use aes::cipher::BlockEncryptMut;
        let key = Sha256::digest(key.as_bytes());
        let cipher = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .unwrap()
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        base64::engine::general_purpose::STANDARD.encode([iv.to_vec(), cipher].concat())
    }

    proptest::proptest! {
        #[test]
        fn decrypting_any_input_never_panics(input in "(?s).{0,200}", key in ".{0,20}") {
            let _ = decrypt(&key, &input);
        }

        #[test]
        fn what_feishu_encrypts_decrypts(
            plain in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            iv in proptest::array::uniform16(proptest::num::u8::ANY),
            key in "[ -~]{1,40}",
        ) {
            let decrypted = decrypt(&key, &encrypt(&key, iv, &plain)).unwrap();
            proptest::prop_assert_eq!(decrypted, plain);
        }
    }
}
