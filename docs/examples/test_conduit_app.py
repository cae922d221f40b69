"""Tests of conduit_app.py: every endpoint, and how many statements each request costs.

Run them with ``pytest docs/examples/test_conduit_app.py`` (add ``--asyncdb-url=...`` for
PostgreSQL). Statements are counted on the engine; transaction control (BEGIN, COMMIT,
ROLLBACK, SAVEPOINT, RELEASE) is not counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conduit_app import app
from sqlalchemy import event

from asyncdb import AsyncDatabaseManager

pytestmark = pytest.mark.usefixtures("asyncdb_transaction")

CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


class Api:
    """An httpx client that counts the statements each request sends."""

    def __init__(self, client: httpx.AsyncClient, db: AsyncDatabaseManager) -> None:
        self.client = client
        self.db = db
        self.statements: list[str] = []

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        seen: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not statement.lstrip().upper().startswith(CONTROL):
                seen.append(statement)

        engine = self.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", listener)
        try:
            yield seen
        finally:
            event.remove(engine, "before_cursor_execute", listener)

    async def __call__(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        status: int = 200,
        statements: int | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = {"Authorization": f"Token {token}"} if token else {}
        with self.counting() as seen:
            response = await self.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code == status, response.text
        if statements is not None:
            assert len(seen) == statements, f"{method} {url}: {len(seen)} statements\n" + (
                "\n".join(seen)
            )
        self.statements = seen
        return response.json() if response.content else None


@pytest.fixture
async def api(asyncdb_manager: AsyncDatabaseManager) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(client, asyncdb_manager)


def inserts_of_an_audited_create(api: Api) -> int:
    """A row and its audit row: one statement on PostgreSQL, an INSERT each elsewhere."""
    return 1 if api.db.backend == "postgresql" else 2


async def register(api: Api, name: str) -> str:
    user = {"username": name, "email": f"{name}@example.org", "password": "password1"}
    body = await api(
        "POST",
        "/api/users",
        json={"user": user},
        status=201,
        statements=inserts_of_an_audited_create(api),
    )
    token: str = body["user"]["token"]
    return token


async def write(api: Api, token: str, title: str, tags: list[str]) -> str:
    article = {"title": title, "description": "d", "body": "b", "tagList": tags}
    body = await api("POST", "/api/articles", token=token, json={"article": article}, status=201)
    slug: str = body["article"]["slug"]
    return slug


async def test_users_register_log_in_and_change(api: Api) -> None:
    token = await register(api, "jake")
    me = await api("GET", "/api/user", token=token, statements=1)
    assert (me["user"]["username"], me["user"]["bio"]) == ("jake", "")
    login = {"email": "jake@example.org", "password": "password1"}
    logged = await api("POST", "/api/users/login", json={"user": login}, statements=1)
    assert logged["user"]["email"] == "jake@example.org"
    changed = await api("PUT", "/api/user", token=token, json={"user": {"bio": "hi"}}, statements=3)
    assert changed["user"]["bio"] == "hi"
    # errors: taken name, wrong password, no or a forged token, a too short password
    again = {"username": "jake", "email": "other@example.org", "password": "password1"}
    taken = await api("POST", "/api/users", json={"user": again}, status=409)
    assert "username" in taken["fields"]
    wrong = {"email": "jake@example.org", "password": "nope-nope"}
    await api("POST", "/api/users/login", json={"user": wrong}, status=401)
    await api("GET", "/api/user", status=401, statements=0)
    await api("GET", "/api/user", token=token + "x", status=401, statements=0)
    short = {"username": "ann", "email": "ann@example.org", "password": "short"}
    await api("POST", "/api/users", json={"user": short}, status=422, statements=0)


async def test_profiles_follow_and_unfollow(api: Api) -> None:
    jake, ann = await register(api, "jake"), await register(api, "ann")
    seen = await api("GET", "/api/profiles/ann", statements=1)
    assert seen["profile"] == {"username": "ann", "bio": "", "image": None, "following": False}
    await api("POST", "/api/profiles/ann/follow", token=jake, statements=3)
    await api("POST", "/api/profiles/ann/follow", token=jake, statements=2)  # idempotent
    followed = await api("GET", "/api/profiles/ann", token=jake, statements=1)
    assert followed["profile"]["following"] is True
    other = await api("GET", "/api/profiles/jake", token=ann, statements=1)
    assert other["profile"]["following"] is False
    await api("DELETE", "/api/profiles/ann/follow", token=jake, statements=2)
    assert (await api("GET", "/api/profiles/ann", token=jake))["profile"]["following"] is False
    await api("GET", "/api/profiles/nobody", status=404)
    await api("POST", "/api/profiles/nobody/follow", token=jake, status=404)
    await api("POST", "/api/profiles/ann/follow", status=401, statements=0)


async def test_articles_crud_and_tags(api: Api) -> None:
    jake, ann = await register(api, "jake"), await register(api, "ann")
    slug = await write(api, jake, "How to train your dragon", ["dragons", "training"])
    got = await api("GET", f"/api/articles/{slug}", statements=2)
    article = got["article"]
    assert article["title"] == "How to train your dragon"
    assert article["tagList"] == ["dragons", "training"]
    assert article["author"] == {"username": "jake", "bio": "", "image": None, "following": False}
    assert (article["favorited"], article["favoritesCount"]) == (False, 0)
    changes = {"article": {"body": "new body"}}
    updated = await api("PUT", f"/api/articles/{slug}", token=jake, json=changes, statements=6)
    assert updated["article"]["body"] == "new body"
    await api("PUT", f"/api/articles/{slug}", token=ann, json=changes, status=403)
    other = await write(api, ann, "Dragons again", ["dragons"])  # reuses the tag
    assert (await api("GET", "/api/tags", statements=1))["tags"] == ["dragons", "training"]
    await api("DELETE", f"/api/articles/{slug}", token=ann, status=403)
    await api("DELETE", f"/api/articles/{slug}", token=jake, status=204, statements=4)
    await api("GET", f"/api/articles/{slug}", status=404)
    assert (await api("GET", "/api/tags"))["tags"] == ["dragons"]  # "training": no live one
    listed = await api("GET", "/api/articles")
    assert [a["slug"] for a in listed["articles"]] == [other]
    await api("POST", "/api/articles", token=jake, json={"article": {"title": ""}}, status=422)


async def test_favourites(api: Api) -> None:
    jake, ann = await register(api, "jake"), await register(api, "ann")
    slug = await write(api, jake, "Fav me", [])
    fav = await api("POST", f"/api/articles/{slug}/favorite", token=ann, statements=5)
    assert (fav["article"]["favorited"], fav["article"]["favoritesCount"]) == (True, 1)
    fav = await api("POST", f"/api/articles/{slug}/favorite", token=ann, statements=4)
    assert fav["article"]["favoritesCount"] == 1  # idempotent
    by_jake = await api("GET", f"/api/articles/{slug}", token=jake)
    assert (by_jake["article"]["favorited"], by_jake["article"]["favoritesCount"]) == (False, 1)
    listed = await api("GET", "/api/articles?favorited=ann", statements=3)
    assert [a["slug"] for a in listed["articles"]] == [slug]
    unfav = await api("DELETE", f"/api/articles/{slug}/favorite", token=ann, statements=4)
    assert (unfav["article"]["favorited"], unfav["article"]["favoritesCount"]) == (False, 0)
    assert (await api("GET", "/api/articles?favorited=ann"))["articlesCount"] == 0
    await api("POST", "/api/articles/nope/favorite", token=ann, status=404)


async def test_list_filters_and_feed(api: Api) -> None:
    jake, ann, bob = [await register(api, n) for n in ("jake", "ann", "bob")]
    a1 = await write(api, jake, "one", ["x"])
    a2 = await write(api, ann, "two", ["x", "y"])
    a3 = await write(api, bob, "three", ["y"])

    async def slugs(url: str, token: str | None = None) -> list[str]:
        body = await api("GET", url, token=token)
        assert body["articlesCount"] >= len(body["articles"])
        return [a["slug"] for a in body["articles"]]

    assert await slugs("/api/articles") == [a3, a2, a1]  # newest first
    assert await slugs("/api/articles?tag=x") == [a2, a1]
    assert await slugs("/api/articles?author=ann") == [a2]
    assert await slugs("/api/articles?tag=y&author=bob") == [a3]
    assert await slugs("/api/articles?limit=1&offset=1") == [a2]
    assert (await api("GET", "/api/articles?limit=1&offset=1"))["articlesCount"] == 3
    await api("POST", "/api/profiles/ann/follow", token=jake)
    await api("POST", "/api/profiles/bob/follow", token=jake)
    feed = await api("GET", "/api/articles/feed", token=jake, statements=3)
    assert [a["slug"] for a in feed["articles"]] == [a3, a2]
    assert all(a["author"]["following"] for a in feed["articles"])
    assert await slugs("/api/articles/feed?limit=1&offset=1", token=jake) == [a2]
    assert await slugs("/api/articles/feed", token=ann) == []
    await api("GET", "/api/articles/feed", status=401)
    # caller input is checked by the repository: 422, not a 500
    await api("GET", "/api/articles?limit=-1", status=422, statements=0)
    await api("GET", "/api/articles?limit=100000", status=422, statements=0)
    await api("GET", "/api/articles?offset=-3", status=422, statements=0)


async def test_comments(api: Api) -> None:
    jake, ann = await register(api, "jake"), await register(api, "ann")
    slug = await write(api, jake, "Talk", [])
    await api("POST", "/api/profiles/ann/follow", token=jake)
    body = {"comment": {"body": "first!"}}
    # user, article, the comment and its audit row (in one statement on PostgreSQL)
    added = await api(
        "POST",
        f"/api/articles/{slug}/comments",
        token=ann,
        json=body,
        status=201,
        statements=inserts_of_an_audited_create(api) + 2,
    )
    assert added["comment"]["author"]["username"] == "ann"
    await api(
        "POST",
        f"/api/articles/{slug}/comments",
        token=jake,
        json={"comment": {"body": "hi"}},
        status=201,
    )
    listed = await api("GET", f"/api/articles/{slug}/comments", token=jake, statements=2)
    assert [(c["body"], c["author"]["following"]) for c in listed["comments"]] == [
        ("first!", True),
        ("hi", False),
    ]
    ident = added["comment"]["id"]
    await api("DELETE", f"/api/articles/{slug}/comments/{ident}", token=jake, status=403)
    await api(
        "DELETE", f"/api/articles/{slug}/comments/{ident}", token=ann, status=204, statements=4
    )
    listed = await api("GET", f"/api/articles/{slug}/comments")
    assert [c["body"] for c in listed["comments"]] == ["hi"]
    await api("DELETE", f"/api/articles/{slug}/comments/{ident}", token=ann, status=404)
    await api("GET", "/api/articles/nope/comments", status=404)


async def test_a_page_of_twenty_articles_with_everything_costs_three_statements(
    api: Api,
) -> None:
    reader = await register(api, "reader")
    writers = [await register(api, f"writer{i}") for i in range(4)]
    for i in range(22):
        await write(api, writers[i % 4], f"article {i}", [f"t{i % 5}", f"t{i % 3 + 5}"])
    await api("POST", "/api/profiles/writer1/follow", token=reader)
    first = (await api("GET", "/api/articles?limit=3"))["articles"]
    for article in first[:2]:
        await api("POST", f"/api/articles/{article['slug']}/favorite", token=reader)
        await api("POST", f"/api/articles/{article['slug']}/favorite", token=writers[0])
    for token in (None, reader):
        # the total, the rows (authors joined; counts and flags as columns), the tags
        page = await api("GET", "/api/articles?limit=20", token=token, statements=3)
        assert (page["articlesCount"], len(page["articles"])) == (22, 20)
        articles = page["articles"]
        assert [a["favoritesCount"] for a in articles[:3]] == [2, 2, 0]
        assert all(len(a["tagList"]) == 2 for a in articles)
    assert [a["favorited"] for a in articles[:3]] == [True, True, False]
    following = {a["author"]["username"]: a["author"]["following"] for a in articles}
    assert following == {"writer0": False, "writer1": True, "writer2": False, "writer3": False}
