//! The delivery protocol's side of the event loop: our requests' answers, and peers'
//! requests handed to whoever answers them (the device's node, the mailbox service).

use libp2p::PeerId;
use libp2p::request_response::{self, ResponseChannel};

use super::{EventLoop, InboundRequest};
use crate::error::DhtError;
use crate::wire::{PushRefusal, Request, Response};

/// Peers' requests waiting for an answer before closed ones are swept out.
const MAX_WAITING_RESPONSES: usize = 1024;

impl EventLoop {
    pub(super) fn on_delivery(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_inbound_request(peer, request, channel),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Err(DhtError::Unreachable {
                        reason: format!("{peer} did not answer: {error}"),
                    }));
                }
            }
            // A response we could not send: the requester times out and retries.
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Hands a peer's request to whoever answers it; if nobody can take it now, answers at
    /// once so the peer can go elsewhere.
    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if self.ignored.contains(&peer) {
            return;
        }
        let (target, unavailable) = match request {
            Request::Push { .. }
            | Request::RecentCommits { .. }
            | Request::GroupInfo { .. }
            | Request::OwnGroups { .. } => (
                self.pushes.as_ref(),
                Response::PushRefused(PushRefusal::NotHere),
            ),
            _ => (self.mailbox.as_ref(), Response::NoMailboxes),
        };
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let handed = target.is_some_and(|sender| {
            sender
                .try_send(InboundRequest {
                    token,
                    peer,
                    request,
                })
                .is_ok()
        });
        if handed {
            if self.responders.len() >= MAX_WAITING_RESPONSES {
                // A handler that stopped (a node shut down mid-request) never answers; its
                // requesters have given up, so their channels are closed.
                self.responders.retain(|_, channel| channel.is_open());
            }
            self.responders.insert(token, channel);
        } else {
            let _ = self
                .swarm
                .behaviour_mut()
                .delivery
                .send_response(channel, unavailable);
        }
    }
}
