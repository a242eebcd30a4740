// The dashboard in a DOM (jsdom): what a user sees and clicks. Run by
// TestDashboardInABrowser: node browser.js URL, with NODE_PATH at jsdom's
// node_modules; prints what it checks and exits 1 if any check fails.
"use strict";
const { JSDOM } = require("jsdom");

const url = process.argv[2];
let failed = 0;
function check(what, ok, got) {
  console.log((ok ? "ok   " : "FAIL ") + what + (ok ? "" : ": " + got));
  if (!ok) failed++;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, cond) {
  for (let i = 0; i < 100; i++) {
    if (cond()) return true;
    await sleep(50);
  }
  check(what, false, "not within 5 s");
  return false;
}

(async () => {
  const dom = await JSDOM.fromURL(url, {
    runScripts: "dangerously", resources: "usable", pretendToBeVisual: true,
    // jsdom has no fetch: the page's calls go through Node's, to the same
    // origin; nor TextDecoder (for tap's stream), which browsers have.
    beforeParse(win) {
      win.fetch = (u, o) => fetch(new URL(u, win.location.href), o);
      win.TextDecoder = TextDecoder;
    },
  });
  const w = dom.window, doc = w.document;
  const click = (el) => el.dispatchEvent(new w.MouseEvent("click", { bubbles: true }));
  const rows = () => [...doc.querySelectorAll("#services tbody tr")];
  const row = (name, ns) => rows().find((r) => r.cells[0].textContent === name && r.cells[1].textContent === ns);

  await until("the services are listed", () => row("helloworld", "default"));
  check("no error shown", doc.querySelector("#error").textContent === "", doc.querySelector("#error").textContent);
  check("helloworld's instances", row("helloworld", "default").cells[2].textContent === "1/1", row("helloworld", "default").cells[2].textContent);
  check("a service's name is text, not markup", doc.querySelector("#services img") === null, "an element from a name");
  const ext = doc.querySelector("#externals tbody tr");
  check("the service outside the mesh", !doc.querySelector("#externals").hidden && ext && ext.cells[0].textContent === "payments" &&
    ext.cells[2].textContent === "https://api.payments.example", ext && ext.textContent);

  click(row("helloworld", "default"));
  await until("helloworld's endpoints", () => doc.querySelector(".endpoint"));
  check("the service is shown", doc.querySelector("#service-name").textContent === "helloworld.default", doc.querySelector("#service-name").textContent);
  const inst = doc.querySelector("#instances tbody tr");
  check("its instance, passing", inst && inst.cells[6].textContent === "passing" && inst.cells[4].textContent === "grpc", inst && inst.textContent);
  const ep = doc.querySelector(".endpoint");
  check("the endpoint's path", ep.querySelector("h4").textContent === "POST /api/helloworld/call", ep.querySelector("h4").textContent);
  check("a request skeleton", JSON.parse(ep.querySelector("textarea").value).name === "", ep.querySelector("textarea").value);

  ep.querySelector("textarea").value = '{"name":"<b>Ada</b>"}';
  click(ep.querySelector("button"));
  await until("the call's answer", () => ep.querySelector("pre"));
  check("200 shown", ep.querySelector("span").textContent.startsWith("200"), ep.querySelector("span").textContent);
  check("the answer, as text", JSON.parse(ep.querySelector("pre").textContent).msg === "Hello <b>Ada</b>" && ep.querySelector("pre b") === null, ep.querySelector("pre").innerHTML);

  ep.querySelector("textarea").value = "{}";
  click(ep.querySelector("button"));
  await until("the error's answer", () => ep.querySelector("span").textContent.startsWith("400"));
  check("the service's error", ep.querySelector("pre").textContent.includes("name is required"), ep.querySelector("pre").textContent);

  // A traced call: every hop's span, shown as a tree in time.
  ep.querySelector("textarea").value = '{"name":"Tess"}';
  ep.querySelector("input[type=checkbox]").checked = true;
  click(ep.querySelector("button"));
  await until("the traced call's trace link", () => ep.querySelector("a.trace-link"));
  const traceID = ep.querySelector("a.trace-link").textContent.replace("trace ", "");
  check("a trace ID", /^[0-9a-f]{32}$/.test(traceID), traceID);
  click(ep.querySelector("a.trace-link"));
  const spanRows = () => [...doc.querySelectorAll("#spans tbody tr")];
  await until("the trace's spans", () => spanRows().length >= 2);
  const spanText = spanRows().map((r) => [...r.cells].map((c) => c.textContent.trim()).join(" "));
  check("the gateway's call, then helloworld's answer", spanText.length === 2 && spanText[0].includes("gateway.micromesh CLIENT") &&
    spanText[1].includes("helloworld.default SERVER") && spanText[1].includes("examples.helloworld.v1.Helloworld/Call") && spanText[1].includes("200 grpc 0"), spanText.join(" | "));
  check("drawn to scale", doc.querySelector("#spans .bar span").style.width !== "", "no bar");
  ep.querySelector("input[type=checkbox]").checked = false;
  click(doc.querySelector("#show-traces"));
  await until("the traces listed", () => doc.querySelector("#trace-list tbody tr"));
  const listed = [...doc.querySelectorAll("#trace-list tbody tr")].map((r) => r.cells[0].textContent);
  check("the traced call alone is listed", listed.length === 1 && listed[0] === traceID, listed.join(","));

  // The last minute's figures: helloworld answered every call (the 400
  // was the caller's mistake, not a failure).
  const success = () => row("helloworld", "default").cells[4].textContent;
  for (let i = 0; i < 20 && success() !== "100.0%"; i++) {
    click(doc.querySelector("#refresh"));
    await sleep(250);
  }
  check("helloworld's success rate", success() === "100.0%", success());
  check("its rate and p99", row("helloworld", "default").cells[5].textContent !== "0" && /s$/.test(row("helloworld", "default").cells[6].textContent),
    row("helloworld", "default").textContent);
  check("web, never called: no figures", row("web", "default").cells[4].textContent === "-", row("web", "default").textContent);
  click(row("helloworld", "default"));
  await until("helloworld's methods", () => doc.querySelector("#methods tbody tr"));
  const methodRow = doc.querySelector("#methods tbody tr");
  check("its figures by method", methodRow.cells[0].textContent === "examples.helloworld.v1.Helloworld/Call" && methodRow.cells[1].textContent === "100.0%",
    methodRow.textContent);
  await until("helloworld's versions", () => doc.querySelector("#versions tbody tr"));
  const versionRow = doc.querySelector("#versions tbody tr");
  check("its figures by version", versionRow.cells[0].textContent === "v1" && versionRow.cells[1].textContent === "100.0%", versionRow.textContent);
  // The page's refresh every 5 s redraws the figures, not what the user
  // is typing.
  await until("helloworld's endpoint form", () => doc.querySelector(".endpoint textarea"));
  await sleep(1000); // the page's own loads settle
  doc.querySelector(".endpoint textarea").value = '{"name":"typing"}';
  await sleep(5600);
  check("a refresh keeps the form", doc.querySelector(".endpoint textarea").value === '{"name":"typing"}', doc.querySelector(".endpoint textarea").value);
  check("and the figures", doc.querySelector("#methods tbody tr") !== null && row("helloworld", "default").cells[4].textContent === "100.0%", "gone");

  // Tap: helloworld's requests as they end, until stopped.
  click(doc.querySelector("#tap"));
  await until("tapping", () => doc.querySelector("#tap-note").textContent.startsWith("Tapping helloworld.default"));
  check("the button stops it", doc.querySelector("#tap").textContent === "stop", doc.querySelector("#tap").textContent);
  const tapped = () => [...doc.querySelectorAll("#tap-list tbody tr")].map((r) => [...r.cells].map((c) => c.textContent));
  const form = doc.querySelector(".endpoint");
  for (let i = 0; i < 30 && !tapped().some((r) => r[3].includes("Helloworld/Call")); i++) {
    form.querySelector("textarea").value = '{"name":"Tap"}';
    click(form.querySelector("button"));
    await sleep(300);
  }
  const call = tapped().find((r) => r[3].includes("Helloworld/Call"));
  check("a call, as it ended", call && call[2] === "gateway.micromesh" && call[3] === "POST /examples.helloworld.v1.Helloworld/Call" &&
    call[4] === "200 grpc 0" && call[6] === "quic" && /ms$/.test(call[5]), call ? call.join(" | ") : doc.querySelector("#tap-note").textContent);
  click(doc.querySelector("#tap"));
  check("stopped", doc.querySelector("#tap").textContent === "tap" && doc.querySelector("#tap-note").textContent === "Stopped.", doc.querySelector("#tap-note").textContent);

  // Its policy: set a key from the form, see it as the operator's, clear it.
  const policyRows = () => [...doc.querySelectorAll("#policy tbody tr")].map((r) => [...r.cells].map((c) => c.textContent));
  const submit = (v) => { doc.querySelector("#policy-input").value = v; doc.querySelector("#policy-form").dispatchEvent(new w.Event("submit", { cancelable: true })); };
  submit("timeout=soon");
  await until("a refused key's reason", () => doc.querySelector("#policy-note").textContent.includes("is not a duration"));
  submit("retries=4");
  await until("the operator's key", () => policyRows().some((r) => r[0] === "retries" && r[1] === "4" && r[2] === "operator"));
  check("the form emptied", doc.querySelector("#policy-input").value === "", doc.querySelector("#policy-input").value);
  click([...doc.querySelectorAll("#policy tbody tr")].find((r) => r.cells[0].textContent === "retries").querySelector("button"));
  await until("the key cleared", () => !policyRows().some((r) => r[0] === "retries"));

  // Its split between versions: refused shares say why; set, shown, cleared.
  const splitNow = () => doc.querySelector("#split-now").textContent;
  check("no split yet", splitNow() === "none (every instance alike)" && doc.querySelector("#split-clear").hidden, splitNow());
  const splitForm = (v, header) => {
    doc.querySelector("#split-input").value = v;
    doc.querySelector("#split-header").value = header;
    doc.querySelector("#split-form").dispatchEvent(new w.Event("submit", { cancelable: true }));
  };
  splitForm("v1=60", "");
  await until("refused shares' reason", () => doc.querySelector("#split-note").textContent.includes("add up to 60 %, not 100 %"));
  splitForm("v1=90 v2=10", "x-version");
  await until("the split shown", () => splitNow() === "v1 90% · v2 10% (x-version picks one)");
  click(doc.querySelector("#split-clear"));
  await until("the split cleared", () => splitNow() === "none (every instance alike)");

  // Its rollout: none; the form says what a start needs, and the control
  // plane's refusal reaches the page.
  check("no rollout", doc.querySelector("#rollout-now").textContent === "none" && doc.querySelector("#rollout-abort").hidden, doc.querySelector("#rollout-now").textContent);
  const rolloutForm = (v) => { doc.querySelector("#rollout-to").value = v; doc.querySelector("#rollout-form").dispatchEvent(new w.Event("submit", { cancelable: true })); };
  rolloutForm("");
  check("a start with no version", doc.querySelector("#rollout-note").textContent.includes("name the version to roll out"), doc.querySelector("#rollout-note").textContent);
  rolloutForm("v9");
  await until("the control plane's refusal", () => doc.querySelector("#rollout-note").textContent.includes("no instance of version v9 registered"));
  doc.querySelector("#rollout-deadline").value = "soon"; // the form sends its interval and deadline
  rolloutForm("v9");
  await until("the deadline's refusal", () => doc.querySelector("#rollout-note").textContent.includes('deadline "soon" is not a duration'));
  doc.querySelector("#rollout-deadline").value = "";


  // A service whose policy asks for an account's token (prod's
  // helloworld): refused without one, answered with the token field set.
  const token = process.argv[3];
  click(row("helloworld", "prod"));
  await until("prod's helloworld", () => doc.querySelector("#service-name").textContent === "helloworld.prod" && doc.querySelector(".endpoint"));
  check("the service shown, not the traces", !doc.querySelector("#service").hidden && doc.querySelector("#traces").hidden, "traces still shown");
  const pep = doc.querySelector(".endpoint");
  pep.querySelector("textarea").value = '{"name":"Ann"}';
  click(pep.querySelector("button"));
  await until("the refusal without a token", () => pep.querySelector("span").textContent.startsWith("403"));
  check("the service's sidecar asks for a token", pep.querySelector("pre") && pep.querySelector("pre").textContent.includes("needs an account's access token"), pep.textContent);
  doc.querySelector("#token").value = token;
  click(pep.querySelector("button"));
  await until("the call with the token", () => pep.querySelector("span").textContent.startsWith("200"));
  check("the answer with the token", pep.querySelector("pre") && pep.querySelector("pre").textContent.includes("Hello Ann"), pep.textContent);

  // Health: meshctl check's checks, from the server.
  click(doc.querySelector("#show-health"));
  await until("the checks", () => doc.querySelector("#checks tbody tr"));
  const checks = [...doc.querySelectorAll("#checks tbody tr")].map((r) => [...r.cells].map((c) => c.textContent).join(" "));
  check("the control plane checked, nothing failed", checks.some((c) => c.startsWith("control plane √ reachable")) && !checks.some((c) => c.includes(" × ")) &&
    !doc.querySelector("#health").hidden && doc.querySelector("#service").hidden, checks.join(" | "));

  const http = row("web", "default");
  click(http);
  await until("the HTTP service's note", () => doc.querySelector("#endpoints-note").textContent !== "");
  check("an HTTP service says where it is forwarded", doc.querySelector("#endpoints-note").textContent.includes("forwards requests to /web/"), doc.querySelector("#endpoints-note").textContent);

  click(row("db", "default"));
  await until("the TCP service's note", () => doc.querySelector("#endpoints-note").textContent.includes("TCP"));
  check("a TCP service says how to reach it", doc.querySelector("#endpoints-note").textContent.includes("meshctl port-forward db PORT") &&
    doc.querySelectorAll("#endpoints form").length === 0, doc.querySelector("#endpoints-note").textContent);

  const ns = doc.querySelector("#namespace");
  check("namespaces to filter by", [...ns.options].map((o) => o.value).join(",") === ",default,prod", [...ns.options].map((o) => o.value).join(","));
  ns.value = "prod";
  ns.dispatchEvent(new w.Event("change"));
  check("the filter", rows().length === 1 && rows()[0].cells[1].textContent === "prod", rows().map((r) => r.textContent).join(" | "));

  w.close();
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.log("FAIL " + e.stack); process.exit(1); });
