// The API key of a server with [auth] api_keys, shared by the test page and the operator page: asked for
// once, on the first 401, in the page's #key-form, and kept for this tab only (sessionStorage).

const KEY_STORAGE = "voicebot.apiKey";
/** The question for a key on screen, shared by every request that needs its answer. */
let keyAsked = null;

function askForKey(message, showStatus) {
  if (keyAsked === null) {
    const form = document.getElementById("key-form");
    const input = document.getElementById("api-key");
    keyAsked = new Promise((resolve) => {
      showStatus("warning", message);
      form.hidden = false;
      input.value = "";
      input.focus();
      form.addEventListener(
        "submit",
        (event) => {
          event.preventDefault();
          sessionStorage.setItem(KEY_STORAGE, input.value.trim());
          input.value = "";
          form.hidden = true;
          keyAsked = null;
          resolve();
        },
        { once: true },
      );
    });
  }
  return keyAsked;
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/**
 * fetch() with this tab's key. A 401 asks for a key (saying so through `showStatus(kind, message)`) and
 * tries again once one is entered, so the answer is never a 401. A network failure rejects, as fetch does.
 */
export async function fetchWithKey(path, init, showStatus) {
  for (;;) {
    const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...init.headers } });
    if (response.status !== 401) {
      return response;
    }
    const rejected = sessionStorage.getItem(KEY_STORAGE) !== null;
    sessionStorage.removeItem(KEY_STORAGE);
    await askForKey(
      rejected
        ? "That API key was not accepted. Enter another one."
        : "This server needs an API key: enter it below.",
      showStatus,
    );
  }
}
