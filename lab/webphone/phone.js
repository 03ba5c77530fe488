// The lab's web phone: SIP.js over WSS, digest registration, outgoing and incoming calls.
// Media is a stub session description handler: plain RTP/AVP SDP that nothing listens to, so a
// headless browser needs neither a microphone nor WebRTC to test the signalling.
// State for tests: window.phone.state ("registered", "calling", "established", "incoming",
// "terminated"...) and window.phone.events (every change, in order).
import {
  Inviter,
  Registerer,
  RegistererState,
  SessionState,
  UserAgent,
} from "./node_modules/sip.js/lib/index.js";

const $ = (id) => document.getElementById(id);
const phone = { state: "idle", events: [], ua: null, session: null, registerer: null };
window.phone = phone;

function set(state, detail = "") {
  phone.state = state;
  phone.events.push(detail ? `${state}: ${detail}` : state);
  $("state").textContent = state;
  $("log").textContent += `${new Date().toISOString().slice(11, 23)} ${state} ${detail}\n`;
}

class StubMedia {
  // SessionDescriptionHandler (SIP.js API) with a fixed audio offer/answer.
  constructor() { this.remote = null; }
  close() {}
  hasDescription(contentType) { return contentType === "application/sdp"; }
  getDescription() {
    const id = Date.now();
    const body = [
      "v=0", `o=webphone ${id} ${id} IN IP4 127.0.0.1`, "s=siplab web phone",
      "c=IN IP4 127.0.0.1", "t=0 0", "m=audio 40000 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000",
      "a=rtpmap:8 PCMA/8000", "a=sendrecv", "",
    ].join("\r\n");
    return Promise.resolve({ body, contentType: "application/sdp" });
  }
  setDescription(sdp) { this.remote = sdp; return Promise.resolve(); }
  rollbackDescription() { return Promise.resolve(); }
  sendDtmf() { return false; }
}

function watch(session, label) {
  phone.session = session;
  session.stateChange.addListener((s) => {
    if (s === SessionState.Established) set("established", label);
    if (s === SessionState.Terminated) { set("terminated", label); phone.session = null; }
  });
}

async function start(server, domain, user, password) {
  const ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${user}@${domain}`),
    transportOptions: { server, traceSip: true },
    authorizationUsername: user,
    authorizationPassword: password,
    sessionDescriptionHandlerFactory: () => new StubMedia(),
    logLevel: "warn",
    delegate: {
      onInvite(invitation) {
        set("incoming", invitation.remoteIdentity.uri.toString());
        watch(invitation, "incoming");
        invitation.accept().catch((e) => set("error", String(e)));
      },
    },
  });
  phone.ua = ua;
  ua.transport.stateChange.addListener((s) => phone.events.push(`transport ${s}`));
  await ua.start();
  const registerer = new Registerer(ua, { expires: 600 });
  phone.registerer = registerer;
  registerer.stateChange.addListener((s) => {
    if (s === RegistererState.Registered) set("registered", `${user}@${domain}`);
    if (s === RegistererState.Unregistered) set("unregistered");
  });
  await registerer.register({
    requestDelegate: { onReject: (r) => set("register-failed", r.message.statusCode) },
  });
}

phone.call = (target) => {
  const uri = UserAgent.makeURI(`sip:${target}@${$("domain").value}`);
  const inviter = new Inviter(phone.ua, uri);
  watch(inviter, `to ${target}`);
  set("calling", target);
  return inviter.invite({
    requestDelegate: { onReject: (r) => set("rejected", r.message.statusCode) },
  }).catch((e) => set("error", String(e)));
};
phone.hangup = () => {
  const s = phone.session;
  if (!s) return;
  if (s.state === SessionState.Established) s.bye();
  else if (s instanceof Inviter) s.cancel();
  else s.reject();
};

const q = new URLSearchParams(location.search);
for (const key of ["server", "domain", "user", "password"]) if (q.get(key)) $(key).value = q.get(key);
$("settings").addEventListener("submit", (e) => {
  e.preventDefault();
  set("registering");
  start($("server").value, $("domain").value, $("user").value, $("password").value)
    .catch((e) => set("error", String(e)));
});
$("call").addEventListener("click", () => phone.call($("target").value));
$("hangup").addEventListener("click", () => phone.hangup());
if (q.get("autostart")) $("register").click();
