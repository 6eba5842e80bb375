//! [`Keyring`]'s sealing and opening of data frames (`security = "encrypt"`).

use bytes::BytesMut;

use super::seal::{SEAL_TAG_LEN, Sender};
use super::{Keyring, Verified, VerifyError};
use crate::wire::{HEADER_LEN, HeaderFields, ParseError, SharedFrame, TAG_LEN};

impl Keyring {
    /// Encrypts a data frame's `body` in place under the signing key's sealing subkey for the
    /// sender `fields` names, with the frame `header` as associated data; returns the tag.
    /// The nonce is `fields.sequence`: a sender seals each sequence number once.
    pub(crate) fn seal_data(
        &self,
        fields: &HeaderFields,
        header: &[u8],
        body: &mut [u8],
    ) -> [u8; SEAL_TAG_LEN] {
        let id = self.signing;
        let Some(root) = self.seal.iter().find(|(k, _)| *k == id).map(|(_, r)| r) else {
            return [0; SEAL_TAG_LEN];
        };
        self.cache
            .seal(root, sender(id, fields), fields.sequence, header, body)
    }

    /// Authenticates and decrypts a sealed data frame. The received bytes are left as they
    /// are: the frame is copied into a fresh buffer, opened there, and its plaintext records
    /// are then checked exactly as [`SharedFrame::parse`] checks a signed frame's. Only this
    /// function and [`verify`](Self::verify) make a [`Verified`] value.
    ///
    /// # Errors
    ///
    /// [`OpenError::Verify`] with [`VerifyError::ModeMismatch`] if the frame is not sealed,
    /// [`VerifyError::UnknownKey`] if the keyring has no key with the frame's key id,
    /// [`VerifyError::BadTag`] if the frame was altered, sealed under another key or for
    /// another sender; [`OpenError::Parse`] if the plaintext records are malformed (sealed so
    /// by a holder of the key). Both convert into a [`Reject`](crate::Reject).
    pub fn open(&self, frame: &SharedFrame) -> Result<Verified<SharedFrame>, OpenError> {
        if !frame.is_sealed() {
            return Err(VerifyError::ModeMismatch { sealed: false }.into());
        }
        let fields = frame.header_fields();
        let root = self
            .seal
            .iter()
            .find(|(k, _)| *k == fields.key_id)
            .map(|(_, r)| r)
            .ok_or(VerifyError::UnknownKey(fields.key_id))?;
        let mut buf = BytesMut::from(&frame.as_bytes()[..]);
        let body_end = buf.len().saturating_sub(TAG_LEN);
        let opened = {
            let (rest, trailer) = buf
                .split_at_mut_checked(body_end)
                .ok_or(VerifyError::BadTag)?;
            let (header, body) = rest
                .split_at_mut_checked(HEADER_LEN)
                .ok_or(VerifyError::BadTag)?;
            let tag = trailer.get(..SEAL_TAG_LEN).ok_or(VerifyError::BadTag)?;
            self.cache.open(
                root,
                sender(fields.key_id, fields),
                fields.sequence,
                header,
                body,
                tag,
            )
        };
        if !opened {
            return Err(VerifyError::BadTag.into());
        }
        let frame = SharedFrame::parse_opened(buf.freeze())?;
        Ok(Verified { frame })
    }
}

/// Why a sealed frame could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It failed authentication (or is not sealed).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// It opened, but its plaintext records are malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

fn sender(key_id: u32, fields: &HeaderFields) -> Sender {
    Sender {
        key_id,
        cluster: fields.cluster.raw(),
        node: fields.node,
        incarnation: fields.incarnation,
    }
}
