"""Data channels between real browsers (the browser client) and a Python participant, through
the server: chat over the reliable channel with the sender's name, typing over the lossy one,
text and binary both ways, a topic, a message to one participant only; a message over the
size limit and a flood over the rate limit answered with `data-error` while the room and the
flooder's media go on."""

import asyncio
import re

import aiohttp
import pytest
from playwright.async_api import Page

from sfu.client import Participant
from tests.conftest import settled, start_server
from tests.e2e.test_browser_call import open_participant, remote_media

pytestmark = pytest.mark.timeout(180)

# Everything a page's session reports about data, kept in the page.
RECORD_JS = """() => {
  const s = window.sfuSession;
  window.dataLog = [];
  window.dataErrors = [];
  s.on('data', (d) => window.dataLog.push({from: d.from, topic: d.topic, text: d.text, reliable: d.reliable,
    data: d.text ? d.data : Array.from(d.data)}));
  s.on('data-error', (e) => window.dataErrors.push(e));
}"""


async def browser_participant(browser, server, room, name) -> tuple[Page, str]:
    page = await open_participant(browser, server.url, room, name)
    await page.evaluate(RECORD_JS)
    return page, await page.evaluate("window.sfuSession.id")


async def data_log(page: Page, **match) -> list[dict]:
    log = await page.evaluate("window.dataLog")
    return [d for d in log if all(d.get(k) == v for k, v in match.items())]


async def wait_log(page: Page, timeout: float = 15, **match) -> dict:
    async def find():
        while not (found := await data_log(page, **match)):
            await asyncio.sleep(0.1)
        return found[0]

    return await asyncio.wait_for(find(), timeout)


async def data_ready(pages, pythons, timeout=30):
    for page in pages:
        await page.wait_for_function("window.sfuSession.dataReady", timeout=timeout * 1000)
    for p in pythons:
        await p.wait_data_open(timeout)


async def metric(server, name) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_browsers_and_a_python_participant_exchange_chat_text_and_binary_on_both_channels(browser, e2e_server):
    server = e2e_server
    alice, alice_id = await browser_participant(browser, server, "dc", "alice")
    bob, bob_id = await browser_participant(browser, server, "dc", "bob")
    bot = Participant(server.ws_url, "dc", "bot")
    try:
        await bot.join()
        await bot.publish_data()
        await data_ready([alice, bob], [bot])

        # Chat typed in alice's page: over the reliable channel, shown in bob's with her name.
        await alice.click("#chat-button")
        await alice.fill("#chat-input", "hello over SCTP")  # an input event: "typing", lossy
        await bob.wait_for_function(
            "!document.getElementById('chat-typing').hidden"
            " && document.getElementById('chat-typing').textContent.includes('alice')",
            timeout=15000,
        )
        await alice.press("#chat-input", "Enter")
        await bob.wait_for_function(
            """[...document.querySelectorAll('#chat-messages li')].some((li) => li.dataset.via === 'data'
               && li.textContent.includes('alice') && li.textContent.includes('hello over SCTP'))""",
            timeout=15000,
        )
        chat = await bot.wait_data(lambda r: r.frame.topic == "chat" and r.frame.sender == alice_id)
        assert chat.reliable and chat.frame.text and chat.frame.as_text() == "hello over SCTP"
        typing = await bot.wait_data(lambda r: r.frame.topic == "typing" and r.frame.sender == alice_id)
        assert not typing.reliable
        # The sender sees its own line at once (data channels do not echo).
        assert await alice.evaluate(
            "[...document.querySelectorAll('#chat-messages li.self')].some((li) => li.dataset.via === 'data')"
        )

        # Binary on the reliable channel and text on the lossy one, browser to browser and Python.
        await alice.evaluate("window.sfuSession.sendData(new Uint8Array([0, 1, 2, 255]), {topic: 'bin'})")
        await alice.evaluate("window.sfuSession.sendData('cursor 10,20', {topic: 'cursor', reliable: false})")
        got = await wait_log(bob, topic="bin")
        assert got == {"from": alice_id, "topic": "bin", "text": False, "reliable": True, "data": [0, 1, 2, 255]}
        got = await wait_log(bob, topic="cursor")
        assert got["data"] == "cursor 10,20" and got["text"] and not got["reliable"]
        assert (await bot.wait_data(lambda r: r.frame.topic == "bin")).frame.payload == bytes([0, 1, 2, 255])
        assert not (await bot.wait_data(lambda r: r.frame.topic == "cursor")).reliable

        # Python to the browsers: text reliable, binary lossy.
        bot.send_data("from python", topic="py")
        bot.send_data(b"\x10\x20", reliable=False, topic="py-bin")
        for page in (alice, bob):
            got = await wait_log(page, topic="py")
            assert got == {"from": bot.id, "topic": "py", "text": True, "reliable": True, "data": "from python"}
            got = await wait_log(page, topic="py-bin")
            assert got["data"] == [0x10, 0x20] and not got["reliable"]

        # To one participant only: the others do not get it (each channel is ordered, so a
        # later message to everyone would come after it).
        bot.send_data("for bob", topic="secret", to=[bob_id])
        bot.send_data("for all", topic="after-secret")
        await alice.evaluate(f"window.sfuSession.sendData('for the bot', {{topic: 'dm', to: ['{bot.id}']}})")
        await alice.evaluate("window.sfuSession.sendData('after', {topic: 'after-dm'})")
        assert (await wait_log(bob, topic="secret"))["data"] == "for bob"
        await wait_log(alice, topic="after-secret")
        assert await data_log(alice, topic="secret") == []
        assert (await bot.wait_data(lambda r: r.frame.topic == "dm")).frame.as_text() == "for the bot"
        await wait_log(bob, topic="after-dm")
        assert await data_log(bob, topic="dm") == []
        assert await alice.evaluate("window.dataErrors") == []
    finally:
        await bot.close()
        for page in (alice, bob):
            await page.context.close()


async def test_over_the_size_and_rate_limits_browsers_get_data_errors_and_the_call_goes_on(browser):
    # Liveness is not what is tested here: a generous heartbeat for a loaded machine.
    server = await start_server(heartbeat_interval_s=5.0, data_messages_per_s=20, data_message_burst=20)
    pages = []
    bot = Participant(server.ws_url, "dc-limits", "bot")
    try:
        alice, alice_id = await browser_participant(browser, server, "dc-limits", "alice")
        bob, bob_id = await browser_participant(browser, server, "dc-limits", "bob")
        pages = [alice, bob]
        await bot.join()
        await bot.publish_data()
        await data_ready(pages, [bot])

        # Over max_data_message_bytes (65536): a clear error to the sender, nothing to the others.
        await alice.evaluate("window.sfuSession.sendData(new Uint8Array(70000), {topic: 'big', ref: 'big-1'})")
        await alice.wait_for_function("window.dataErrors.length > 0", timeout=15000)
        (error,) = await alice.evaluate("window.dataErrors")
        assert error["code"] == "too-large" and error["ref"] == "big-1" and "65536" in error["message"]
        assert "too-large" in await alice.inner_text("body"), "the page tells its user"
        assert await metric(server, 'sfu_data_dropped_total{reason="too-large"}') == 1

        # A flood from alice's page, far over the rate (20 a second, bursts of 20).
        async def alice_video_frames_at_bob():
            return (await remote_media(bob)).get(alice_id, {}).get("frames", 0)

        await eventually_async(alice_video_frames_at_bob, lambda v: v > 10)
        flood = 2000
        sent = await alice.evaluate(
            f"""() => {{ let n = 0; for (let i = 0; i < {flood}; i++) {{
                if (window.sfuSession.sendData('x'.repeat(100), {{topic: 'flood'}})) n++; }} return n; }}"""
        )
        assert sent == flood
        frames_after_flood = await alice_video_frames_at_bob()
        # The room goes on: the bot's message reaches both pages meanwhile.
        bot.send_data("still here", topic="during")
        for page in pages:
            await wait_log(page, topic="during")

        # Every message of the flood was relayed or refused, and each refusal was reported.
        async def accounted():
            relayed = await metric(server, "sfu_data_messages_relayed_total")
            dropped = await metric(server, 'sfu_data_dropped_total{reason="rate-limited"}')
            return relayed, dropped

        relayed, dropped = await settled(accounted, quiet_s=2.0, timeout=60)
        relayed -= 1  # "during", the bot's ("big" was refused)
        assert relayed + dropped == flood, (relayed, dropped)

        def reported_js():
            return alice.evaluate(
                "window.dataErrors.filter((e) => e.code === 'rate-limited').reduce((n, e) => n + e.dropped, 0)"
            )

        await eventually_async(reported_js, lambda n: n == dropped, timeout=20)
        errors = await alice.evaluate("window.dataErrors.filter((e) => e.code === 'rate-limited').length")
        assert errors < 30, "refusals are summed up, not one message per frame"
        received = await settled(lambda: data_log(bob, topic="flood"), quiet_s=1.0)
        assert len(received) == relayed
        # Alice's video keeps reaching bob.
        await eventually_async(alice_video_frames_at_bob, lambda v: v > frames_after_flood + 30, timeout=20)
        assert not await data_log(bob, topic="big")
    finally:
        await bot.close()
        for page in pages:
            await page.context.close()
        await server.runner.cleanup()


async def eventually_async(read, condition, timeout: float = 20.0):
    """Poll an async reading until ``condition`` holds for it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition(value := await read()):
        assert asyncio.get_running_loop().time() < deadline, f"last value: {value}"
        await asyncio.sleep(0.2)
    return value
