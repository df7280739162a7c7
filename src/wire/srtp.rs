//! SRTP and SRTCP for the two WebRTC profiles: AES_CM_128_HMAC_SHA1_80
//! (RFC 3711) and AEAD_AES_128_GCM (RFC 7714).
//!
//! A [`SrtpSession`] holds the session keys derived from one DTLS-SRTP master
//! key, with the AES key schedules and the HMAC state precomputed. It works in
//! place on a caller's buffer that has room for the trailer; nothing is
//! allocated per packet. Rollover counters and SRTCP indexes belong to the
//! caller (the outbound side chooses them); [`SrtcpInbound`] and [`SrtpInbound`]
//! add index estimation and replay protection for what a peer sends.

use std::collections::HashMap;
use std::fmt;

use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use aes::Aes128Enc;
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hmac::digest::KeyInit as MacKeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::wire::rtp;

type Aes128Ctr = ctr::Ctr128BE<Aes128Enc>;
type HmacSha1 = Hmac<Sha1>;

const KEY_LEN: usize = 16;
const CM_SALT_LEN: usize = 14;
const GCM_SALT_LEN: usize = 12;
const HMAC_SHA1_KEY_LEN: usize = 20;
const HMAC_SHA1_80_TAG_LEN: usize = 10;
const HMAC_SHA1_32_TAG_LEN: usize = 4;
const GCM_TAG_LEN: usize = 16;
const SRTCP_INDEX_LEN: usize = 4;
const SRTCP_ENCRYPTED: u32 = 0x8000_0000;
const RTCP_HEADER_LEN: usize = 8;

const LABEL_RTP_ENCRYPTION: u8 = 0;
const LABEL_RTP_AUTHENTICATION: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_ENCRYPTION: u8 = 3;
const LABEL_RTCP_AUTHENTICATION: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    AesCm128HmacSha1_80,
    /// As _80 but with a 32-bit RTP tag (SRTCP keeps the 80-bit one, RFC 4568
    /// section 6.2.1). Only for sources (SDES keys, Janus's `srtpsuite = 32`):
    /// fanout's DTLS-SRTP never offers it.
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl Profile {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(Self::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(Self::AesCm128HmacSha1_32),
            "AEAD_AES_128_GCM" => Some(Self::AeadAes128Gcm),
            _ => None,
        }
    }

    pub const fn salt_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 => CM_SALT_LEN,
            Self::AeadAes128Gcm => GCM_SALT_LEN,
        }
    }

    /// Key || salt, as DTLS-SRTP exports it for one direction.
    pub const fn master_len(self) -> usize {
        KEY_LEN + self.salt_len()
    }

    /// Bytes SRTP adds to an RTP packet.
    pub const fn rtp_overhead(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => HMAC_SHA1_80_TAG_LEN,
            Self::AesCm128HmacSha1_32 => HMAC_SHA1_32_TAG_LEN,
            Self::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet.
    pub const fn rtcp_overhead(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 => SRTCP_INDEX_LEN + HMAC_SHA1_80_TAG_LEN,
            Self::AeadAes128Gcm => SRTCP_INDEX_LEN + GCM_TAG_LEN,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpError {
    MasterKeyLength { expected: usize, got: usize },
    BufferTooSmall,
    Malformed,
    Authentication,
    Replayed,
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MasterKeyLength { expected, got } => {
                write!(f, "master key must be {expected} bytes (key || salt), got {got}")
            }
            Self::BufferTooSmall => f.write_str("buffer has no room for the SRTP trailer"),
            Self::Malformed => f.write_str("packet too short or not RTP/RTCP"),
            Self::Authentication => f.write_str("authentication failed"),
            Self::Replayed => f.write_str("replayed packet"),
        }
    }
}

impl std::error::Error for SrtpError {}

/// The SRTP key derivation function (RFC 3711 section 4.3) with a key
/// derivation rate of 0: AES-CM keyed with the master key, run from
/// (master salt XOR label at octet 7) * 2^16. A 12-byte AEAD master salt is
/// padded with zeros to 14 bytes (RFC 7714 section 11).
fn derive(master_key: &[u8; KEY_LEN], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    Aes128Ctr::new(master_key.into(), &iv.into()).apply_keystream(out);
}

/// The keys of one direction of RTP or of RTCP, with their schedules.
#[allow(clippy::large_enum_variant)] // one per viewer direction, never moved on the hot path
enum Transform {
    AesCm {
        aes: Aes128Enc,
        salt: [u8; CM_SALT_LEN],
        mac: HmacSha1,
    },
    /// `seal` (ring: stitched AES-NI/VAES + carry-less multiply) protects, about 2x
    /// faster than RustCrypto here; `aead` (RustCrypto) unprotects the control
    /// plane's few SRTCP packets, where it also handles authentication-only SRTCP.
    AesGcm {
        aead: Aes128Gcm,
        seal: ring::aead::LessSafeKey,
        salt: [u8; GCM_SALT_LEN],
    },
}

impl Transform {
    fn derive(profile: Profile, key: &[u8; KEY_LEN], salt: &[u8], labels: [u8; 3]) -> Self {
        let [encryption, authentication, salting] = labels;
        let mut session_key = [0u8; KEY_LEN];
        derive(key, salt, encryption, &mut session_key);
        match profile {
            Profile::AesCm128HmacSha1_80 | Profile::AesCm128HmacSha1_32 => {
                let mut session_salt = [0u8; CM_SALT_LEN];
                let mut auth_key = [0u8; HMAC_SHA1_KEY_LEN];
                derive(key, salt, salting, &mut session_salt);
                derive(key, salt, authentication, &mut auth_key);
                Self::aes_cm(&session_key, session_salt, &auth_key)
            }
            Profile::AeadAes128Gcm => {
                let mut session_salt = [0u8; GCM_SALT_LEN];
                derive(key, salt, salting, &mut session_salt);
                Self::aes_gcm(&session_key, session_salt)
            }
        }
    }

    fn aes_cm(key: &[u8; KEY_LEN], salt: [u8; CM_SALT_LEN], auth_key: &[u8]) -> Self {
        Self::AesCm {
            aes: Aes128Enc::new(key.into()),
            salt,
            mac: <HmacSha1 as MacKeyInit>::new_from_slice(auth_key).expect("HMAC takes any key length"),
        }
    }

    fn aes_gcm(key: &[u8; KEY_LEN], salt: [u8; GCM_SALT_LEN]) -> Self {
        let seal = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, key).expect("a 16-byte AES-128 key");
        Self::AesGcm { aead: Aes128Gcm::new(key.into()), seal: ring::aead::LessSafeKey::new(seal), salt }
    }
}

/// AES-CM's counter block: (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16).
fn aes_cm_iv(salt: &[u8; CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..CM_SALT_LEN].copy_from_slice(salt);
    xor_into(&mut iv[4..8], &ssrc.to_be_bytes());
    xor_into(&mut iv[8..14], &index.to_be_bytes()[2..]);
    iv
}

/// RFC 7714 section 8.1: 00 00 || SSRC || ROC || SEQ, XOR the salt.
fn gcm_rtp_iv(salt: &[u8; GCM_SALT_LEN], ssrc: u32, roc: u32, sequence: u16) -> [u8; 12] {
    let mut iv = *salt;
    xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
    xor_into(&mut iv[6..10], &roc.to_be_bytes());
    xor_into(&mut iv[10..12], &sequence.to_be_bytes());
    iv
}

/// RFC 7714 section 9.1: 00 00 || SSRC || 00 00 || SRTCP index, XOR the salt.
fn gcm_rtcp_iv(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = *salt;
    xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
    xor_into(&mut iv[8..12], &index.to_be_bytes());
    iv
}

fn xor_into(target: &mut [u8], bytes: &[u8]) {
    for (t, b) in target.iter_mut().zip(bytes) {
        *t ^= b;
    }
}

fn apply_aes_cm(aes: &Aes128Enc, iv: &[u8; 16], data: &mut [u8]) {
    let core = ctr::CtrCore::<&Aes128Enc, ctr::flavors::Ctr128BE>::inner_iv_init(aes, iv.into());
    ctr::cipher::StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
}

/// SRTP and SRTCP keys of one direction of a DTLS-SRTP association.
pub struct SrtpSession {
    profile: Profile,
    rtp: Transform,
    rtcp: Transform,
}

impl SrtpSession {
    /// Derives the session keys from `master` (key || salt).
    pub fn new(profile: Profile, master: &[u8]) -> Result<Self, SrtpError> {
        if master.len() != profile.master_len() {
            return Err(SrtpError::MasterKeyLength { expected: profile.master_len(), got: master.len() });
        }
        let (key, salt) = master.split_at(KEY_LEN);
        let key: &[u8; KEY_LEN] = key.try_into().expect("split at KEY_LEN");
        let rtp_labels = [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTHENTICATION, LABEL_RTP_SALT];
        let rtcp_labels = [LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTHENTICATION, LABEL_RTCP_SALT];
        Ok(Self {
            profile,
            rtp: Transform::derive(profile, key, salt, rtp_labels),
            rtcp: Transform::derive(profile, key, salt, rtcp_labels),
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Protects the RTP packet `buf[..len]` in place; returns the SRTP length.
    /// `roc` is the rollover counter of the packet's sequence number.
    pub fn protect_rtp(&self, buf: &mut [u8], len: usize, roc: u32) -> Result<usize, SrtpError> {
        let header_len = rtp::header_len(&buf[..len]).ok_or(SrtpError::Malformed)?;
        let out_len = len + self.profile.rtp_overhead();
        if out_len > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = rtp::read_u32(&buf[8..12]);
        let sequence = rtp::read_u16(&buf[2..4]);
        match &self.rtp {
            Transform::AesCm { aes, salt, mac } => {
                let index = (u64::from(roc) << 16) | u64::from(sequence);
                apply_aes_cm(aes, &aes_cm_iv(salt, ssrc, index), &mut buf[header_len..len]);
                let mut mac = mac.clone();
                mac.update(&buf[..len]);
                mac.update(&roc.to_be_bytes());
                let tag = mac.finalize().into_bytes();
                buf[len..out_len].copy_from_slice(&tag[..out_len - len]);
            }
            Transform::AesGcm { seal, salt, .. } => {
                let iv = gcm_rtp_iv(salt, ssrc, roc, sequence);
                let (header, rest) = buf.split_at_mut(header_len);
                let (payload, trailer) = rest.split_at_mut(len - header_len);
                let tag = seal
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(iv),
                        ring::aead::Aad::from(&*header),
                        payload,
                    )
                    .map_err(|_| SrtpError::Malformed)?;
                trailer[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
            }
        }
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTP packet `buf[..len]` in place; returns the RTP length.
    pub fn unprotect_rtp(&self, buf: &mut [u8], len: usize, roc: u32) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtp_overhead();
        if len < rtp::FIXED_HEADER_LEN + overhead {
            return Err(SrtpError::Malformed);
        }
        let rtp_len = len - overhead;
        let header_len = rtp::header_len(&buf[..rtp_len]).ok_or(SrtpError::Malformed)?;
        let ssrc = rtp::read_u32(&buf[8..12]);
        let sequence = rtp::read_u16(&buf[2..4]);
        match &self.rtp {
            Transform::AesCm { aes, salt, mac } => {
                let mut mac = mac.clone();
                mac.update(&buf[..rtp_len]);
                mac.update(&roc.to_be_bytes());
                mac.verify_truncated_left(&buf[rtp_len..len]).map_err(|_| SrtpError::Authentication)?;
                let index = (u64::from(roc) << 16) | u64::from(sequence);
                apply_aes_cm(aes, &aes_cm_iv(salt, ssrc, index), &mut buf[header_len..rtp_len]);
            }
            Transform::AesGcm { aead, salt, .. } => {
                let iv = gcm_rtp_iv(salt, ssrc, roc, sequence);
                let (header, rest) = buf.split_at_mut(header_len);
                let (payload, trailer) = rest.split_at_mut(rtp_len - header_len);
                let tag = Tag::try_from(&trailer[..GCM_TAG_LEN]).expect("16 bytes");
                aead.decrypt_inout_detached(&Nonce::from(iv), header, payload.into(), &tag)
                    .map_err(|_| SrtpError::Authentication)?;
            }
        }
        Ok(rtp_len)
    }

    /// Protects the (compound) RTCP packet `buf[..len]` in place with SRTCP
    /// index `index` (31 bits); returns the SRTCP length.
    pub fn protect_rtcp(&self, buf: &mut [u8], len: usize, index: u32) -> Result<usize, SrtpError> {
        if len < RTCP_HEADER_LEN {
            return Err(SrtpError::Malformed);
        }
        let out_len = len + self.profile.rtcp_overhead();
        if out_len > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let e_and_index = (SRTCP_ENCRYPTED | (index & !SRTCP_ENCRYPTED)).to_be_bytes();
        let ssrc = rtp::read_u32(&buf[4..8]);
        match &self.rtcp {
            Transform::AesCm { aes, salt, mac } => {
                let iv = aes_cm_iv(salt, ssrc, u64::from(index & !SRTCP_ENCRYPTED));
                apply_aes_cm(aes, &iv, &mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&e_and_index);
                let mut mac = mac.clone();
                mac.update(&buf[..len + SRTCP_INDEX_LEN]);
                let tag = mac.finalize().into_bytes();
                buf[len + SRTCP_INDEX_LEN..out_len].copy_from_slice(&tag[..HMAC_SHA1_80_TAG_LEN]);
            }
            Transform::AesGcm { seal, salt, .. } => {
                let iv = gcm_rtcp_iv(salt, ssrc, index & !SRTCP_ENCRYPTED);
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&e_and_index);
                let tag = seal
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(iv),
                        ring::aead::Aad::from(aad),
                        &mut buf[RTCP_HEADER_LEN..len],
                    )
                    .map_err(|_| SrtpError::Malformed)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG_LEN..out_len].copy_from_slice(&e_and_index);
            }
        }
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTCP packet `buf[..len]` in place;
    /// returns the RTCP length and the SRTCP index.
    pub fn unprotect_rtcp(&self, buf: &mut [u8], len: usize) -> Result<(usize, u32), SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if len < RTCP_HEADER_LEN + overhead || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let rtcp_len = len - overhead;
        let ssrc = rtp::read_u32(&buf[4..8]);
        match &self.rtcp {
            Transform::AesCm { aes, salt, mac } => {
                let e_and_index = rtp::read_u32(&buf[rtcp_len..rtcp_len + SRTCP_INDEX_LEN]);
                let mut mac = mac.clone();
                mac.update(&buf[..rtcp_len + SRTCP_INDEX_LEN]);
                mac.verify_truncated_left(&buf[rtcp_len + SRTCP_INDEX_LEN..len])
                    .map_err(|_| SrtpError::Authentication)?;
                let index = e_and_index & !SRTCP_ENCRYPTED;
                if e_and_index & SRTCP_ENCRYPTED != 0 {
                    apply_aes_cm(aes, &aes_cm_iv(salt, ssrc, u64::from(index)), &mut buf[RTCP_HEADER_LEN..rtcp_len]);
                }
                Ok((rtcp_len, index))
            }
            Transform::AesGcm { aead, salt, .. } => {
                let e_and_index_bytes: [u8; SRTCP_INDEX_LEN] =
                    buf[len - SRTCP_INDEX_LEN..len].try_into().expect("four bytes");
                let e_and_index = u32::from_be_bytes(e_and_index_bytes);
                let index = e_and_index & !SRTCP_ENCRYPTED;
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let tag = Tag::try_from(&buf[rtcp_len..rtcp_len + GCM_TAG_LEN]).expect("16 bytes");
                let nonce = &Nonce::from(iv);
                if e_and_index & SRTCP_ENCRYPTED != 0 {
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&e_and_index_bytes);
                    aead.decrypt_inout_detached(nonce, &aad, (&mut buf[RTCP_HEADER_LEN..rtcp_len]).into(), &tag)
                } else {
                    // Authenticated only: the whole packet and the index are associated data.
                    let mut aad = buf[..rtcp_len].to_vec();
                    aad.extend_from_slice(&e_and_index_bytes);
                    aead.decrypt_inout_detached(nonce, &aad, (&mut [][..]).into(), &tag)
                }
                .map_err(|_| SrtpError::Authentication)?;
                Ok((rtcp_len, index))
            }
        }
    }
}

/// Which indexes of one SSRC were accepted, 128 back from the highest.
#[derive(Default)]
pub struct ReplayWindow {
    highest: Option<u64>,
    seen: u128,
}

impl ReplayWindow {
    const SIZE: u64 = 128;

    pub fn is_fresh(&self, index: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if index > highest => true,
            Some(highest) => {
                let age = highest - index;
                age < Self::SIZE && self.seen & (1u128 << age) == 0
            }
        }
    }

    pub fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => self.seen |= 1u128 << (highest - index),
            Some(highest) => {
                let shift = index - highest;
                self.seen = if shift >= Self::SIZE { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// SRTCP from a peer: authentication, decryption and a replay window per SSRC.
pub struct SrtcpInbound {
    session: SrtpSession,
    windows: HashMap<u32, ReplayWindow>,
}

impl SrtcpInbound {
    pub fn new(session: SrtpSession) -> Self {
        Self { session, windows: HashMap::new() }
    }

    /// Unprotects `packet` into plain RTCP.
    pub fn unprotect(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if packet.len() < RTCP_HEADER_LEN {
            return Err(SrtpError::Malformed);
        }
        let ssrc = rtp::read_u32(&packet[4..8]);
        let mut buf = packet.to_vec();
        let (len, index) = self.session.unprotect_rtcp(&mut buf, packet.len())?;
        let window = self.windows.entry(ssrc).or_default();
        if !window.is_fresh(u64::from(index)) {
            return Err(SrtpError::Replayed);
        }
        window.accept(u64::from(index));
        buf.truncate(len);
        Ok(buf)
    }
}

/// SRTP from a peer: rollover counter estimation (RFC 3711 section 3.3.1)
/// and a replay window per SSRC.
pub struct SrtpInbound {
    session: SrtpSession,
    streams: HashMap<u32, (u64, ReplayWindow)>,
}

impl SrtpInbound {
    pub fn new(session: SrtpSession) -> Self {
        Self { session, streams: HashMap::new() }
    }

    /// Unprotects `buf[..len]` in place; returns the RTP length.
    pub fn unprotect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < rtp::FIXED_HEADER_LEN {
            return Err(SrtpError::Malformed);
        }
        let ssrc = rtp::read_u32(&buf[8..12]);
        let sequence = rtp::read_u16(&buf[2..4]);
        let index = match self.streams.get(&ssrc) {
            Some((highest, _)) => {
                let delta = i64::from(sequence.wrapping_sub(*highest as u16) as i16);
                highest.checked_add_signed(delta).ok_or(SrtpError::Replayed)?
            }
            None => u64::from(sequence),
        };
        if let Some((_, window)) = self.streams.get(&ssrc) {
            if !window.is_fresh(index) {
                return Err(SrtpError::Replayed);
            }
        }
        let rtp_len = self.session.unprotect_rtp(buf, len, (index >> 16) as u32)?;
        let (highest, window) = self.streams.entry(ssrc).or_insert((index, ReplayWindow::default()));
        *highest = (*highest).max(index);
        window.accept(index);
        Ok(rtp_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    fn session_with_keys(rtp: Transform, rtcp: Transform, profile: Profile) -> SrtpSession {
        SrtpSession { profile, rtp, rtcp }
    }

    const B3_MASTER_KEY: &str = "E1F97A0D3E018BE0D64FA32C06DE4139";
    const B3_MASTER_SALT: &str = "0EC675AD498AFEEBB6960B3AABE6";

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let key: [u8; 16] = hex(B3_MASTER_KEY).try_into().unwrap();
        let salt = hex(B3_MASTER_SALT);
        let mut cipher_key = [0u8; 16];
        let mut cipher_salt = [0u8; 14];
        let mut auth_key = [0u8; 20];
        derive(&key, &salt, LABEL_RTP_ENCRYPTION, &mut cipher_key);
        derive(&key, &salt, LABEL_RTP_SALT, &mut cipher_salt);
        derive(&key, &salt, LABEL_RTP_AUTHENTICATION, &mut auth_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(auth_key.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    /// RFC 3711 Appendix B.2: with SSRC 0 and index 0, a zero payload encrypts to the keystream.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        assert_eq!(aes_cm_iv(&salt, 0, 0).to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let session = session_with_keys(
            Transform::aes_cm(&key, salt, &[0; 20]),
            Transform::aes_cm(&key, salt, &[0; 20]),
            Profile::AesCm128HmacSha1_80,
        );
        let mut packet = [0u8; 12 + 48 + 10];
        packet[0] = 0x80;
        assert_eq!(session.protect_rtp(&mut packet, 60, 0), Ok(70));
        let keystream = hex("E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0");
        assert_eq!(packet[12..60].to_vec(), keystream);
    }

    /// A packet protected by libsrtp with the B.3 master key (its srtp_driver
    /// test): the key derivation, AES-CM and HMAC-SHA1 together.
    #[test]
    fn aes_cm_hmac_sha1_80_matches_libsrtp() {
        let mut master = hex(B3_MASTER_KEY);
        master.extend(hex(B3_MASTER_SALT));
        let session = SrtpSession::new(Profile::AesCm128HmacSha1_80, &master).unwrap();
        let plain = hex("800f1234decafbadcafebabeabababababababababababababababab");
        let protected = hex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb");
        let mut buf = [0u8; 64];
        buf[..plain.len()].copy_from_slice(&plain);
        let len = session.protect_rtp(&mut buf, plain.len(), 0).unwrap();
        assert_eq!(buf[..len].to_vec(), protected);
        assert_eq!(session.unprotect_rtp(&mut buf, len, 0), Ok(plain.len()));
        assert_eq!(buf[..plain.len()].to_vec(), plain);
    }

    fn rfc7714_session() -> SrtpSession {
        let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        session_with_keys(Transform::aes_gcm(&key, salt), Transform::aes_gcm(&key, salt), Profile::AeadAes128Gcm)
    }

    const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                               20646976 69736120 696e2070 61727465 73207472 6573";
    const RFC7714_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                                be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                                6a9152cf 765ee439 0cce";
    const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                                4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
    const RFC7714_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                                 6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                                 96cf4d2f c5abf872 45d9eade 800005d4";

    #[test]
    fn rfc7714_16_1_srtp_gcm() {
        let session = rfc7714_session();
        assert_eq!(
            gcm_rtp_iv(&hex("517569642070726f2071756f").try_into().unwrap(), 0x5501a0b2, 0, 0xf17b).to_vec(),
            hex("51753c6580c2726f20718414")
        );
        let plain = hex(RFC7714_RTP);
        let mut buf = [0u8; 128];
        buf[..plain.len()].copy_from_slice(&plain);
        let len = session.protect_rtp(&mut buf, plain.len(), 0).unwrap();
        assert_eq!(buf[..len].to_vec(), hex(RFC7714_SRTP));
        assert_eq!(session.unprotect_rtp(&mut buf, len, 0), Ok(plain.len()));
        assert_eq!(buf[..plain.len()].to_vec(), plain);

        let mut tampered = hex(RFC7714_SRTP);
        tampered[20] ^= 1;
        assert_eq!(session.unprotect_rtp(&mut tampered.clone(), tampered.len(), 0), Err(SrtpError::Authentication));
        assert_eq!(session.unprotect_rtp(&mut hex(RFC7714_SRTP), 66, 1), Err(SrtpError::Authentication), "wrong ROC");
    }

    #[test]
    fn rfc7714_17_1_srtcp_gcm() {
        let session = rfc7714_session();
        let plain = hex(RFC7714_RTCP);
        let mut buf = [0u8; 128];
        buf[..plain.len()].copy_from_slice(&plain);
        let len = session.protect_rtcp(&mut buf, plain.len(), 0x5d4).unwrap();
        assert_eq!(buf[..len].to_vec(), hex(RFC7714_SRTCP));
        assert_eq!(session.unprotect_rtcp(&mut buf, len), Ok((plain.len(), 0x5d4)));
        assert_eq!(buf[..plain.len()].to_vec(), plain);
    }

    #[test]
    fn aes_cm_srtcp_round_trip_and_tamper() {
        let session = SrtpSession::new(Profile::AesCm128HmacSha1_80, &[7; 30]).unwrap();
        let plain = hex(RFC7714_RTCP);
        let mut buf = [0u8; 128];
        buf[..plain.len()].copy_from_slice(&plain);
        let len = session.protect_rtcp(&mut buf, plain.len(), 5).unwrap();
        assert_eq!(len, plain.len() + 14);
        assert_eq!(buf[plain.len()..plain.len() + 4], [0x80, 0, 0, 5]);
        assert_ne!(buf[8..plain.len()], plain[8..], "encrypted");
        let protected = buf;
        assert_eq!(session.unprotect_rtcp(&mut buf, len), Ok((plain.len(), 5)));
        assert_eq!(buf[..plain.len()].to_vec(), plain);
        let mut tampered = protected;
        tampered[9] ^= 0x40;
        assert_eq!(session.unprotect_rtcp(&mut tampered, len), Err(SrtpError::Authentication));
    }

    #[test]
    fn refuses_wrong_master_key_length_and_small_buffers() {
        assert_eq!(
            SrtpSession::new(Profile::AeadAes128Gcm, &[0; 30]).err(),
            Some(SrtpError::MasterKeyLength { expected: 28, got: 30 })
        );
        let session = SrtpSession::new(Profile::AeadAes128Gcm, &[0; 28]).unwrap();
        let mut buf = hex(RFC7714_RTP);
        let len = buf.len();
        assert_eq!(session.protect_rtp(&mut buf, len, 0), Err(SrtpError::BufferTooSmall));
        assert_eq!(session.unprotect_rtcp(&mut [0x80; 20], 20), Err(SrtpError::Malformed));
    }

    #[test]
    fn srtcp_inbound_refuses_replays() {
        let master = [3u8; 28];
        let sender = SrtpSession::new(Profile::AeadAes128Gcm, &master).unwrap();
        let mut inbound = SrtcpInbound::new(SrtpSession::new(Profile::AeadAes128Gcm, &master).unwrap());
        let plain = hex(RFC7714_RTCP);
        let protect = |index: u32| {
            let mut buf = [0u8; 128];
            buf[..plain.len()].copy_from_slice(&plain);
            let len = sender.protect_rtcp(&mut buf, plain.len(), index).unwrap();
            buf[..len].to_vec()
        };
        assert_eq!(inbound.unprotect(&protect(10)), Ok(plain.clone()));
        assert_eq!(inbound.unprotect(&protect(10)), Err(SrtpError::Replayed));
        assert_eq!(inbound.unprotect(&protect(8)), Ok(plain.clone()), "late but in the window");
        assert_eq!(inbound.unprotect(&protect(500)), Ok(plain.clone()));
        assert_eq!(inbound.unprotect(&protect(300)), Err(SrtpError::Replayed), "behind the window");
    }

    #[test]
    fn srtp_inbound_follows_rollover_and_refuses_replays() {
        let master = [9u8; 30];
        let sender = SrtpSession::new(Profile::AesCm128HmacSha1_80, &master).unwrap();
        let mut inbound = SrtpInbound::new(SrtpSession::new(Profile::AesCm128HmacSha1_80, &master).unwrap());
        let protect = |sequence: u16, roc: u32| {
            let mut buf = [0u8; 64];
            buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
            buf[2..4].copy_from_slice(&sequence.to_be_bytes());
            buf[12..16].copy_from_slice(b"data");
            let len = sender.protect_rtp(&mut buf, 16, roc).unwrap();
            buf[..len].to_vec()
        };
        for (sequence, roc) in [(0xfffe, 0), (0xffff, 0), (0, 1), (1, 1)] {
            let mut packet = protect(sequence, roc);
            let len = packet.len();
            assert_eq!(inbound.unprotect(&mut packet, len), Ok(16));
            assert_eq!(&packet[12..16], b"data");
        }
        let mut again = protect(0, 1);
        let len = again.len();
        assert_eq!(inbound.unprotect(&mut again, len), Err(SrtpError::Replayed));
    }

    #[test]
    fn replay_window_slides() {
        let mut window = ReplayWindow::default();
        assert!(window.is_fresh(5));
        window.accept(5);
        assert!(!window.is_fresh(5));
        window.accept(200);
        assert!(!window.is_fresh(5), "too old");
        assert!(window.is_fresh(199));
        assert!(window.is_fresh(73));
        assert!(!window.is_fresh(72));
    }
}
