//! A member's side of one secure fit stage, as the [`ClientSession`](crate::ClientSession)
//! drives it: advertise keys, share them, train and send the masked input, unmask.

use secure_agg::{ClientRound, InboundShares, KeyDirectory, UnmaskRequest};

use super::{MemberSigner, MemberVerifier, SecureError, SecureFit, encode_update};
use crate::protocol::{SecureClientStep, SecureServerStep};

/// Where a member is in a secure fit stage.
enum Step {
    /// Sent its keys; waits for everyone's.
    AwaitingDirectory,
    /// Sent its shares; waits for those addressed to it.
    AwaitingShares,
    /// Has its shares; trains, then masks its update.
    Training(InboundShares),
    /// Sent its masked input; waits for the unmask request.
    AwaitingUnmask,
    /// Answered the unmask request (at most once per round), or failed.
    Done,
}

/// What the session does after a server step.
#[derive(Debug)]
pub enum MemberAction {
    /// Send this protocol message.
    Reply(SecureClientStep, Vec<u8>),
    /// Start local training; mask its result with [`SecureMember::masked_input`].
    Train,
}

/// One member's state in one secure fit stage.
pub struct SecureMember {
    round: u64,
    fit: SecureFit,
    protocol: ClientRound,
    signer: MemberSigner,
    verifier: MemberVerifier,
    step: Step,
}

impl std::fmt::Debug for SecureMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureMember")
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl SecureMember {
    /// Joins the secure fit stage of `round` as client `me`; returns the state and the signed
    /// key advertisement to send.
    pub fn start(
        round: u64,
        fit: SecureFit,
        me: u32,
        signer: MemberSigner,
        verifier: MemberVerifier,
    ) -> Result<(Self, Vec<u8>), SecureError> {
        if !fit.participants.contains(&me) {
            return Err(SecureError::Settings(format!(
                "client {me} is not among the round's participants"
            )));
        }
        let mut rng = privacy::noise::os_rng()
            .map_err(|e| SecureError::Settings(format!("no randomness: {e}")))?;
        let mut protocol = ClientRound::new(
            fit.binding(round),
            fit.params,
            me,
            &fit.participants,
            &mut rng,
        )?;
        let advertisement = protocol.advertise(&signer)?.to_bytes();
        Ok((
            Self {
                round,
                fit,
                protocol,
                signer,
                verifier,
                step: Step::AwaitingDirectory,
            },
            advertisement,
        ))
    }

    /// The modulus width of the masked values.
    pub fn modulus_bits(&self) -> u32 {
        self.fit.params.modulus_bits
    }

    /// The round this state belongs to.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Takes one server step. Anything out of order fails the member's part in the round.
    pub fn handle(
        &mut self,
        step: SecureServerStep,
        payload: &[u8],
    ) -> Result<MemberAction, SecureError> {
        let current = std::mem::replace(&mut self.step, Step::Done);
        match (current, step) {
            (Step::AwaitingDirectory, SecureServerStep::KeyDirectory) => {
                let dir = KeyDirectory::from_bytes(payload, &self.fit.limits())?;
                let packets =
                    self.protocol
                        .handle_key_directory(dir, &self.verifier, &self.signer)?;
                self.step = Step::AwaitingShares;
                Ok(MemberAction::Reply(
                    SecureClientStep::SharePackets,
                    packets.to_bytes(),
                ))
            }
            (Step::AwaitingShares, SecureServerStep::Shares) => {
                let inbound = InboundShares::from_bytes(payload, &self.fit.limits())?;
                self.step = Step::Training(inbound);
                Ok(MemberAction::Train)
            }
            (Step::AwaitingUnmask, SecureServerStep::Unmask) => {
                let request = UnmaskRequest::from_bytes(payload, &self.fit.limits())?;
                let response = self.protocol.handle_unmask_request(request, &self.signer)?;
                Ok(MemberAction::Reply(
                    SecureClientStep::UnmaskResponse,
                    response.to_bytes(),
                ))
            }
            (_, step) => Err(SecureError::Unexpected(format!(
                "{step:?} in round {}",
                self.round
            ))),
        }
    }

    /// Encodes and masks the trained update (`local - global`, clipped by the caller when
    /// privacy is on) with `num_examples` as its weight; returns the signed header and the
    /// masked values.
    pub fn masked_input(
        &mut self,
        update: &[f32],
        num_examples: u64,
    ) -> Result<(Vec<u8>, Vec<u32>), SecureError> {
        let Step::Training(inbound) = std::mem::replace(&mut self.step, Step::Done) else {
            return Err(SecureError::Unexpected(format!(
                "masked input in round {} before the shares arrived",
                self.round
            )));
        };
        let mut rng = privacy::noise::os_rng()
            .map_err(|e| SecureError::Settings(format!("no randomness: {e}")))?;
        let mut values = encode_update(&self.fit, update, num_examples, &mut rng)?;
        let header = self
            .protocol
            .handle_shares(inbound, &mut values, &self.signer)?;
        self.step = Step::AwaitingUnmask;
        Ok((header.to_bytes(), values))
    }
}
