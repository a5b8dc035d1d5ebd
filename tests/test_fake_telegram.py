"""The fake Telegram server, exercised through python-telegram-bot over real HTTP.

If PTB can talk to the fake the way it talks to api.telegram.org, tests that run the bridge
against the fake are testing the real client stack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram.error import BadRequest, Conflict, EndPointNotFound, InvalidToken, NetworkError

from bot.testing.fake_telegram import FakeTelegram
from bot.testing.telegram_html import HtmlParseError, parse_html

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

TOKEN = "123456:TEST-token"
CHAT = 4242


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_bot(TOKEN, "persona_bot", "Persona")
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TOKEN, base_url=f"{fake.base_url}/bot") as client:
        yield client


def _other_client(fake: FakeTelegram, token: str = TOKEN) -> telegram.Bot:
    return telegram.Bot(token, base_url=f"{fake.base_url}/bot")


async def test_get_me_returns_the_registered_identity(bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.first_name, me.is_bot) == (
        123456,
        "persona_bot",
        "Persona",
        True,
    )
    assert me.can_read_all_group_messages is False


async def test_injected_message_arrives_through_get_updates(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    update_id = fake.inject_message(TOKEN, CHAT, "/start hello", username="alice", first_name="A")
    updates = await bot.get_updates()
    assert update_id == 1
    assert [u.update_id for u in updates] == [1]
    message = updates[0].message
    assert message is not None
    assert message.text == "/start hello"
    assert message.from_user is not None
    assert (message.from_user.id, message.from_user.username) == (CHAT, "alice")
    assert (message.chat.id, message.chat.type) == (CHAT, "private")
    assert message.parse_entities(["bot_command"]) == {message.entities[0]: "/start"}


async def test_group_message_mentions_and_reply_to_bot(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    sent = await bot.send_message(-100777, "earlier answer")
    fake.inject_message(
        TOKEN,
        -100777,
        "@persona_bot more please",
        user_id=9,
        chat_type="supergroup",
        reply_to_bot_message=sent.message_id,
    )
    (update,) = await bot.get_updates()
    message = update.message
    assert message is not None
    assert message.chat.type == "supergroup"
    assert message.message_id > sent.message_id
    assert message.parse_entities(["mention"]) == {message.entities[0]: "@persona_bot"}
    assert message.reply_to_message is not None
    assert message.reply_to_message.text == "earlier answer"
    assert message.reply_to_message.from_user is not None
    assert message.reply_to_message.from_user.id == 123456


async def test_a_supergroup_message_reaches_each_bot_as_its_own_update(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    other = "654321:OTHER-token"
    fake.add_bot(other, "other_bot")
    fake.inject_message(other, 1, "warm up other's update ids")
    sent = await bot.send_message(-100888, "from persona")
    ids = fake.inject_group_message(
        [TOKEN, other], -100888, "@other_bot hi", user_id=9, reply_to=(TOKEN, sent.message_id)
    )
    assert ids == {TOKEN: 1, other: 2}  # each bot numbers its own updates
    async with _other_client(fake, other) as other_client:
        (theirs,) = [u for u in await other_client.get_updates() if u.message.chat.id < 0]
    (mine,) = await bot.get_updates()
    assert mine.message.message_id == theirs.message.message_id > sent.message_id
    assert theirs.message.reply_to_message.text == "from persona"
    assert theirs.message.parse_entities(["mention"]) == {theirs.message.entities[0]: "@other_bot"}


async def test_offset_confirms_and_forgets_updates(fake: FakeTelegram, bot: telegram.Bot) -> None:
    ids = [fake.inject_message(TOKEN, CHAT, f"m{i}") for i in range(3)]
    assert ids == [1, 2, 3]
    assert [u.update_id for u in await bot.get_updates()] == [1, 2, 3]
    assert fake.pending_updates(TOKEN) == 3  # returning is not confirming

    assert [u.update_id for u in await bot.get_updates(offset=3)] == [3]
    assert fake.confirmed_offset(TOKEN) == 3
    assert fake.pending_updates(TOKEN) == 1
    assert [u.update_id for u in await bot.get_updates(offset=1)] == [3]  # 1 and 2 are gone

    assert await bot.get_updates(offset=4) == ()
    assert (fake.confirmed_offset(TOKEN), fake.pending_updates(TOKEN)) == (4, 0)


async def test_limit_caps_the_batch(fake: FakeTelegram, bot: telegram.Bot) -> None:
    for i in range(5):
        fake.inject_message(TOKEN, CHAT, f"m{i}")
    assert [u.update_id for u in await bot.get_updates(limit=2)] == [1, 2]


async def test_long_poll_wakes_as_soon_as_a_message_is_injected(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    # An hour-long poll that returns at all was woken by the inject, not by its timeout.
    poll = asyncio.create_task(bot.get_updates(timeout=3600, read_timeout=3700))
    await fake.wait_for_poll(TOKEN)
    fake.inject_message(TOKEN, CHAT, "wake up")
    async with asyncio.timeout(30):
        updates = await poll
    assert [u.message.text for u in updates if u.message] == ["wake up"]


async def test_long_poll_without_updates_waits_then_returns_empty(bot: telegram.Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert time.monotonic() - started >= 0.9


async def test_concurrent_get_updates_terminates_the_older_one(fake: FakeTelegram) -> None:
    async with _other_client(fake) as first, _other_client(fake) as second:
        older = asyncio.create_task(first.get_updates(timeout=10))
        await fake.wait_for_poll(TOKEN)
        newer = asyncio.create_task(second.get_updates(timeout=10))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await older
        fake.inject_message(TOKEN, CHAT, "for the survivor")
        assert [u.update_id for u in await newer] == [1]
    assert fake.poll_conflicts == {TOKEN: 1}  # counted: two live pollers of one bot


async def test_stop_releases_a_parked_long_poll(fake: FakeTelegram, bot: telegram.Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=3600, read_timeout=3700))
    await fake.wait_for_poll(TOKEN)
    await fake.stop()
    async with asyncio.timeout(30):  # released by stop(), not by the hour-long timeout
        assert await poll == ()


HTML_OK = (
    '<b>x</b> &lt; <a href="http://e">l</a> <pre><code class="language-py">a&amp;b</code></pre>'
)


async def test_valid_html_is_accepted_and_recorded(fake: FakeTelegram, bot: telegram.Bot) -> None:
    message = await bot.send_message(CHAT, HTML_OK, parse_mode="HTML")
    assert message.text == "x < l a&b"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bold", 0, 1),
        ("text_link", 4, 1),
        ("pre", 6, 3),
    ]
    assert message.entities[2].language == "py"
    (sent,) = fake.sent(TOKEN)
    assert (sent.method, sent.chat_id, sent.text, sent.parse_mode) == (
        "sendMessage",
        CHAT,
        "x < l a&b",
        "HTML",
    )
    assert sent.raw["text"] == HTML_OK
    assert sent.message_id == message.message_id


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("AT&T", "at byte offset 2"),
        ("<foo>x</foo>", 'Unsupported start tag "foo" at byte offset 0'),
        ("<b>x</i>", "Unmatched end tag at byte offset 4"),
        ("é</b>", "Unexpected end tag at byte offset 2"),
    ],
)
async def test_invalid_html_is_rejected_like_telegram(
    fake: FakeTelegram, bot: telegram.Bot, text: str, reason: str
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities") as caught:
        await bot.send_message(CHAT, text, parse_mode="HTML")
    # PTB strips "Bad Request: " and str.capitalize()s the rest, which lower-cases it.
    assert reason.lower() in str(caught.value).lower()
    assert fake.sent(TOKEN) == []


@pytest.mark.parametrize("text", ["", "   \n ", "<b> </b>"])
async def test_empty_text_is_rejected(bot: telegram.Bot, text: str) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(CHAT, text, parse_mode="HTML")


async def test_text_limit_is_4096_utf16_units(fake: FakeTelegram, bot: telegram.Bot) -> None:
    await bot.send_message(CHAT, "a" * 4096)
    await bot.send_message(CHAT, "😀" * 2048)  # 2 UTF-16 units each
    await bot.send_message(CHAT, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")  # tags are free
    for too_long in ("a" * 4097, "😀" * 2049):
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message(CHAT, too_long)
    assert len(fake.sent(TOKEN)) == 3


async def test_string_params_are_not_json_decoded(fake: FakeTelegram, bot: telegram.Bot) -> None:
    message = await bot.send_message(CHAT, "123", message_thread_id=7, reply_to_message_id=99)
    assert message.text == "123"
    (sent,) = fake.sent(TOKEN)
    assert (sent.text, sent.message_thread_id, sent.reply_to_message_id) == ("123", 7, 99)


async def test_json_and_query_string_bodies_are_accepted(fake: FakeTelegram) -> None:
    url = f"{fake.base_url}/bot{TOKEN}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/sendMessage", json={"chat_id": 5, "text": "json"}) as r:
            body = await r.json()
        async with session.get(f"{url}/sendMessage", params={"chat_id": "6", "text": "1"}) as r:
            assert (await r.json())["result"]["text"] == "1"
    assert body["ok"] is True
    assert body["result"]["chat"] == {"id": 5, "type": "private", "first_name": "User"}
    assert [(m.chat_id, m.text) for m in fake.sent(TOKEN)] == [(5, "json"), (6, "1")]


async def test_fail_next_429_surfaces_as_retry_after(
    fake: FakeTelegram, bot: telegram.Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # retry_after as timedelta, no deprecation
    fake.fail_next(TOKEN, "sendMessage", status=429, retry_after=3)
    with pytest.raises(telegram.error.RetryAfter) as caught:
        await bot.send_message(CHAT, "hi")
    assert caught.value.retry_after == dt.timedelta(seconds=3)
    await bot.send_message(CHAT, "hi")  # the fault was used up
    assert [m.text for m in fake.sent(TOKEN)] == ["hi"]


async def test_fail_next_500_surfaces_as_network_error(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    fake.fail_next(TOKEN, "getMe", times=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.get_me()
    assert (await bot.get_me()).username == "persona_bot"
    assert len(fake.calls_to("getMe", TOKEN)) == 4  # one from Bot.initialize


async def test_dropped_connection_is_a_network_error(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.drop_connection_next(TOKEN, "sendMessage")
    with pytest.raises(NetworkError):
        await bot.send_message(CHAT, "lost")
    await bot.send_message(CHAT, "delivered")
    assert [m.text for m in fake.sent(TOKEN)] == ["delivered"]


async def test_unknown_token_is_invalid_token(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with _other_client(fake, "999:unknown"):
            pass
    assert [c.method for c in fake.calls_to("getMe", "999:unknown")] == ["getMe"]


async def test_unknown_method_is_not_found(bot: telegram.Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": CHAT})


async def test_wait_for_sent_returns_when_messages_arrive(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    waiter = asyncio.create_task(fake.wait_for_sent(TOKEN, 2, chat_id=CHAT))
    await bot.send_message(CHAT + 1, "elsewhere")
    await bot.send_message(CHAT, "one")
    assert not waiter.done()
    await bot.send_message(CHAT, "two")
    assert [m.text for m in await waiter] == ["one", "two"]


async def test_wait_for_sent_times_out_saying_what_it_saw(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    await bot.send_message(CHAT, "only one")
    with pytest.raises(TimeoutError, match=r"saw 1: \['only one'\]"):
        await fake.wait_for_sent(TOKEN, 2, timeout=0.2)


async def test_edit_message_text(fake: FakeTelegram, bot: telegram.Bot) -> None:
    original = await bot.send_message(CHAT, "draft")
    edited = await bot.edit_message_text(
        "<i>final</i>", CHAT, original.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, telegram.Message)
    assert (edited.message_id, edited.text, edited.edit_date is not None) == (
        original.message_id,
        "final",
        True,
    )
    assert [(m.method, m.text) for m in fake.sent(TOKEN, CHAT)] == [
        ("sendMessage", "draft"),
        ("editMessageText", "final"),
    ]
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("<i>final</i>", CHAT, original.message_id, parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", CHAT, 999)
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.edit_message_text("<b>", CHAT, original.message_id, parse_mode="HTML")


async def test_drafts_in_private_chats_only(fake: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.send_message_draft(CHAT, 7, "<b>so far</b>", parse_mode="HTML") is True
    assert await bot.send_message_draft(CHAT, 7, "", api_kwargs={"can_stop": True}) is True
    [first, thinking] = fake.drafts
    assert (first.chat_id, first.draft_id, first.text) == (CHAT, 7, "so far")
    assert (thinking.text, thinking.raw["can_stop"]) == ("", True)
    assert fake.sent(TOKEN) == []  # a draft is not a message
    with pytest.raises(BadRequest, match=r"(?i)textdraft_peer_invalid"):
        await bot.send_message_draft(-100123, 7, "in a group")
    with pytest.raises(BadRequest, match=r"(?i)non-zero"):
        await bot.send_message_draft(CHAT, 0, "no id")
    assert [method for method, _ in fake.rejected] == ["sendMessageDraft"] * 2


async def test_set_my_commands_is_recorded(fake: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.set_my_commands([("reset", "Forget the conversation")]) is True
    assert fake.commands(TOKEN) == [{"command": "reset", "description": "Forget the conversation"}]
    (command,) = await bot.get_my_commands()
    assert (command.command, command.description) == ("reset", "Forget the conversation")
    with pytest.raises(BadRequest):
        await bot.set_my_commands([("Bad Command", "spaces and capitals")])


async def test_send_chat_action_is_recorded(fake: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.send_chat_action(CHAT, "typing") is True
    assert fake.chat_actions(TOKEN) == [(CHAT, "typing")]
    with pytest.raises(BadRequest):
        await bot.send_chat_action(CHAT, "dancing")


async def test_calls_are_recorded_in_order_with_decoded_params(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    assert await bot.delete_webhook() is True
    await bot.get_updates(offset=5, timeout=0, allowed_updates=["message"])
    assert [c.method for c in fake.calls] == ["getMe", "deleteWebhook", "getUpdates"]
    params = fake.calls_to("getUpdates")[0].params
    assert (params["offset"], params["allowed_updates"]) == (5, ["message"])
    assert fake.calls[0].at <= fake.calls[-1].at


async def test_server_logs_never_contain_tokens(
    fake: FakeTelegram, bot: telegram.Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.inject_message(TOKEN, CHAT, "hi")
    await bot.get_updates()
    await bot.send_message(CHAT, "hello")
    with pytest.raises(InvalidToken):
        async with _other_client(fake, "777:secret-token"):
            pass
    server_records = [r for r in caplog.records if r.name.startswith(("bot.", "aiohttp"))]
    assert any("@persona_bot" in r.getMessage() for r in server_records)
    assert not any(
        TOKEN in r.getMessage() or "secret-token" in r.getMessage() for r in server_records
    )


@pytest.mark.parametrize(
    ("source", "visible", "entities"),
    [
        ("a&#x1F600;<b>b</b>", "a😀b", [("bold", 3, 1)]),
        ('<span class="tg-spoiler">s</span>', "s", [("spoiler", 0, 1)]),
        ("<blockquote expandable>q</blockquote>", "q", [("expandable_blockquote", 0, 1)]),
        ("<B>x</B>&quot;&#60;&gt;", 'x"<>', [("bold", 0, 1)]),
        ("<b></b>x", "x", []),  # empty entities are dropped
    ],
)
def test_html_visible_text_and_entities(
    source: str, visible: str, entities: list[tuple[str, int, int]]
) -> None:
    parsed = parse_html(source)
    assert parsed.text == visible
    assert [(e["type"], e["offset"], e["length"]) for e in parsed.entities] == entities


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<a href=http://x>l</a>", "Unexpected end of name token at byte offset 8"),
        (
            "<b x>y</b>",
            'Expected equal sign in declaration of an attribute of the tag "b" at byte offset 0',
        ),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("😀 &nbsp;", 'Unescaped "&" (use "&amp;") at byte offset 5'),
    ],
)
def test_html_errors_name_the_problem(source: str, reason: str) -> None:
    with pytest.raises(HtmlParseError) as caught:
        parse_html(source)
    assert str(caught.value) == reason


def test_html_checker_survives_lone_surrogates_and_huge_entities() -> None:
    from bot.testing.telegram_html import HtmlParseError, parse_html

    assert parse_html("a\ud800b").text == "a\ud800b"
    with pytest.raises(HtmlParseError):
        parse_html("&#" + "9" * 5000 + ";")


async def test_a_webhook_gets_updates_posted_with_the_secret_and_retried_until_2xx(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    """Only routed URLs are contacted; a non-2xx is retried, a 2xx confirms the update."""
    answers = [500, 503, 200, 200]
    seen: list[tuple[str, str, int]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, request.headers.get(SECRET_HEADER, ""), body["update_id"]))
        return web.Response(status=answers.pop(0))

    app = web.Application()
    app.router.add_post("/{bot}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        fake.route_webhooks(
            "https://hooks.example.test/base", f"http://127.0.0.1:{runner.addresses[0][1]}"
        )
        assert await bot.set_webhook("https://hooks.example.test/base/me", secret_token="s3cr3t")
        first = fake.inject_message(TOKEN, CHAT, "one")
        second = fake.inject_message(TOKEN, CHAT, "two")
        await fake.wait_for_deliveries(TOKEN, 4)
        with pytest.raises(Conflict):  # a webhook and getUpdates exclude each other
            await bot.get_updates(timeout=0)
    finally:
        await runner.cleanup()
    assert fake.webhook_deliveries(TOKEN) == [
        (first, 500),
        (first, 503),
        (first, 200),
        (second, 200),
    ]
    assert seen[0] == ("/me", "s3cr3t", first)
    assert fake.pending_updates(TOKEN) == 0


async def test_an_unrouted_webhook_is_never_contacted(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    assert await bot.set_webhook("https://nowhere.example.test/hook")
    fake.inject_message(TOKEN, CHAT, "waits")
    assert (await bot.get_webhook_info()).pending_update_count == 1
    assert fake.webhook_deliveries(TOKEN) == []
    assert await bot.delete_webhook()
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [1]


async def test_webhook_deliveries_run_in_parallel_across_chats_but_in_order_within_one(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    release_first = asyncio.Event()
    arrivals: list[int] = []

    async def receive(request: web.Request) -> web.Response:
        update_id = (await request.json())["update_id"]
        arrivals.append(update_id)
        if update_id == 1:
            await release_first.wait()  # chat A's first update is slow to be answered
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{bot}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        fake.route_webhooks("https://h.example.test", f"http://127.0.0.1:{runner.addresses[0][1]}")
        assert await bot.set_webhook("https://h.example.test/x")
        fake.inject_message(TOKEN, CHAT, "a1")
        fake.inject_message(TOKEN, CHAT, "a2")
        fake.inject_message(TOKEN, CHAT + 1, "b1")
        await fake.wait_for_deliveries(TOKEN, 1)  # b1, while a1 is still unanswered
        before_release = list(arrivals)
        release_first.set()
        await fake.wait_for_deliveries(TOKEN, 3)
    finally:
        await runner.cleanup()
    assert sorted(before_release) == [1, 3]  # a2 waits for a1; b1 does not
    assert arrivals[-1] == 2


async def test_a_webhook_routed_to_several_servers_takes_them_in_turn_keeping_chat_order(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    """Round-robin over two servers, a retry included; one chat still goes one at a time."""
    arrivals: list[tuple[str, int]] = []  # (server, update_id)
    refuse_once = {3}
    runners = []
    for name in ("left", "right"):

        async def receive(request: web.Request, name: str = name) -> web.Response:
            update_id = (await request.json())["update_id"]
            arrivals.append((name, update_id))
            if update_id in refuse_once:
                refuse_once.discard(update_id)
                return web.Response(status=503)
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/{bot}", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
    bases = [f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners]
    try:
        fake.route_webhooks("https://lb.example.test", *bases)
        assert await bot.set_webhook("https://lb.example.test/x")
        for n in range(4):
            fake.inject_message(TOKEN, CHAT, f"m{n}")
        await fake.wait_for_deliveries(TOKEN, 5)
    finally:
        for runner in runners:
            await runner.cleanup()
    log = fake.webhook_delivery_log(TOKEN)
    assert [(u, s) for u, s, _ in log] == [(1, 200), (2, 200), (3, 503), (3, 200), (4, 200)]
    assert [base for _, _, base in log] == [bases[0], bases[1]] * 2 + [bases[0]]
    assert [u for _, u in arrivals] == [1, 2, 3, 3, 4]  # the chat's order, across both
    assert fake.webhook_deliveries(TOKEN) == [(u, s) for u, s, _ in log]
