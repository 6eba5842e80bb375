//! What the frame writers need from whoever holds the keys.

use super::{HeaderFields, SEAL_TAG_LEN, TAG_LEN};

/// The key holder a frame writer signs (or seals) with: [`crate::auth::Keyring`], the only
/// implementation. The writers take it through this trait so the wire format does not depend
/// on the key store: `auth` builds on `wire` (it verifies parsed frames), never the reverse.
pub trait FrameSigner: sealed::Sealed {
    /// The key id a frame's header names: the one [`sign`](Self::sign) and
    /// [`seal_data`](Self::seal_data) use.
    fn signing_key_id(&self) -> u32;

    /// The HMAC-SHA256 tag over `signed` (a frame's header and body).
    fn sign(&self, signed: &[u8]) -> [u8; TAG_LEN];

    /// Encrypts a data frame's `body` in place for the sender `fields` names, with the frame
    /// `header` as associated data, and returns the AES-256-GCM tag. The nonce is
    /// `fields.sequence`: a sender seals each sequence number once, which the writers keep.
    #[doc(hidden)]
    fn seal_data(
        &self,
        fields: &HeaderFields,
        header: &[u8],
        body: &mut [u8],
    ) -> [u8; SEAL_TAG_LEN];
}

pub(crate) mod sealed {
    /// Keeps [`FrameSigner`](super::FrameSigner) to the crate's own key holder.
    pub trait Sealed {}
}
