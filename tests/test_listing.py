"""ListRequests / ListWorkers: filters, sorting and pagination, as upstream's."""
from __future__ import annotations

import pytest

from boruta.core.errors import BadArgumentError, NotFoundError, WrongSortItemError
from boruta.core.types import (MAX_PAGE_LIMIT, ListInfo, Paginator, ReqState, RequestFilter,
                               SortInfo, UserInfo, WorkerFilter, WorkerState)
from boruta.testing import wuuid

RS, WS = ReqState, WorkerState
BASE_PRIORITY = 4                                   # odd IDs have priority BASE_PRIORITY, even IDs BASE_PRIORITY+1
ASC, DESC = SortInfo("id"), SortInfo("id", descending=True)


def page_ids(result):
    page, info = result
    return [r.id for r in page], info


@pytest.fixture
def sixteen(farm):
    """Upstream's list fixture: IDs 1-16, odd priority BASE_PRIORITY, even BASE_PRIORITY+1; 1-2 WAIT, others DONE."""
    farm.idle(wuuid(1))
    for n in (1, 2):                    # not valid yet: they stay WAITING
        assert farm.request(priority=BASE_PRIORITY + (n + 1) % 2, valid_after=farm.later(86400)) == n
    for n in range(3, 17):
        req_id = farm.request(priority=BASE_PRIORITY if n % 2 else BASE_PRIORITY + 1)
        assert req_id == n and farm.worker_of(n) == wuuid(1)
        farm.done(req_id)
    states = {r.id: r.state for r in farm.scheduler.list_requests()[0]}
    assert states == {n: RS.WAIT if n <= 2 else RS.DONE for n in range(1, 17)}
    return farm.scheduler


# ---------------------------------------------------------------- worked examples
class TestWorkedExamples:
    EVEN = RequestFilter(priorities=(BASE_PRIORITY + 1,))

    @pytest.mark.parametrize("filt, sorter, paginator, expected, total, remaining", [
        (EVEN, DESC, Paginator(5, backward=True, limit=3), [10, 8, 6], 8, 3),
        (EVEN, DESC, Paginator(5, limit=3), [4, 2], 8, 0),
        (None, DESC, Paginator(5, limit=3), [4, 3, 2], 16, 1),
        (None, DESC, Paginator(5, backward=True, limit=3), [8, 7, 6], 16, 8),
        (None, ASC, Paginator(5, backward=True, limit=32), [1, 2, 3, 4], 16, 0),
        (None, ASC, Paginator(5, limit=0), list(range(6, 17)), 16, 0),
        (None, DESC, Paginator(1, limit=3), [], 16, 0),
        (None, DESC, Paginator(16, backward=True, limit=3), [], 16, 0),
        (None, ASC, Paginator(0, backward=True, limit=5), [12, 13, 14, 15, 16], 16, 11),
        (None, None, None, list(range(1, 17)), 16, 0),
        (EVEN, None, None, list(range(2, 17, 2)), 8, 0),
        # the border request matches the filter: Total is not decremented
        (EVEN, ASC, Paginator(6, limit=2), [8, 10], 8, 3),
        (EVEN, ASC, Paginator(6, backward=True, limit=2), [2, 4], 8, 0),
        (RequestFilter(states=(RS.WAIT,)), ASC, Paginator(9, limit=5), [], 2, 0),
        (RequestFilter(states=(RS.WAIT,)), ASC, Paginator(9, backward=True), [1, 2], 2, 0),
        (RequestFilter(ids=(3, 4, 5), priorities=(BASE_PRIORITY,)), None, None, [3, 5], 2, 0),
        (RequestFilter(states=(RS.DONE, RS.WAIT), ids=(2, 3)), None, None, [2, 3], 2, 0),
    ])
    def test_b28_examples(self, sixteen, filt, sorter, paginator, expected, total, remaining):
        got, info = page_ids(sixteen.list_requests(filt, sorter, paginator))
        assert got == expected
        assert info == ListInfo(total, remaining)

    def test_b28_page_limit_default_with_more_than_65535(self, farm):
        farm.register(wuuid(1))
        # ValidAfter in the future keeps them out of the matcher: creation stays cheap.
        later = farm.later(3600)
        for _ in range(MAX_PAGE_LIMIT + 16):
            farm.scheduler.new_request({}, 8, valid_after=later)
        farm.scheduler.drain_effects()
        page, info = farm.scheduler.list_requests(paginator=Paginator(limit=0))
        assert len(page) == MAX_PAGE_LIMIT and info == ListInfo(MAX_PAGE_LIMIT + 16, 16)
        assert page[0].id == 1 and page[-1].id == MAX_PAGE_LIMIT


class TestPagination:
    @pytest.fixture
    def four(self, farm):
        farm.register(wuuid(1))
        for _ in range(4):
            farm.request()
        return farm.scheduler

    @pytest.mark.parametrize("paginator, expected, remaining", [
        (Paginator(0, limit=2), [1, 2], 2),
        (Paginator(2, limit=2), [3, 4], 0),
        (Paginator(4, backward=True, limit=2), [2, 3], 1),
        (Paginator(2, backward=True, limit=2), [1], 0),
        (Paginator(0, backward=True, limit=2), [3, 4], 2),
    ])
    def test_b84_examples(self, four, paginator, expected, remaining):
        got, info = page_ids(four.list_requests(paginator=paginator))
        assert got == expected and info == ListInfo(4, remaining)

    def test_walk_forward_and_backward(self, sixteen):
        seen, border = [], 0
        while True:
            page, info = sixteen.list_requests(sorter=DESC, paginator=Paginator(border, limit=3))
            seen += [r.id for r in page]
            if info.remaining_items == 0:
                break
            border = page[-1].id
        assert seen == list(range(16, 0, -1))
        seen, border = [], 0
        while True:
            page, info = sixteen.list_requests(paginator=Paginator(border, backward=True,
                                                                   limit=5))
            seen = [r.id for r in page] + seen
            if info.remaining_items == 0:
                break
            border = page[0].id
        assert seen == list(range(1, 17))


class TestListRequestsErrors:
    def test_unknown_paginator_id(self, farm):
        farm.register(wuuid(1))
        farm.request()
        with pytest.raises(NotFoundError) as err:
            farm.scheduler.list_requests(paginator=Paginator(2))
        assert str(err.value) == "request not found"

    @pytest.mark.parametrize("item", ["uuid", "owner", "caps", "ids"])
    def test_wrong_sort_item(self, farm, item):
        with pytest.raises(WrongSortItemError) as err:
            farm.scheduler.list_requests(sorter=SortInfo(item))
        # The message lists the items that do exist.
        assert str(err.value) == (f"unknown sort item {item!r}: "
                                  "use one of id, priority, deadline, validafter, state")
        assert err.value.code == "wrong_sort_item"

    def test_empty(self, farm):
        assert farm.scheduler.list_requests() == ([], ListInfo(0, 0))
        assert farm.scheduler.list_requests(RequestFilter(ids=(1,))) == ([], ListInfo(0, 0))

    @pytest.mark.parametrize("kwargs", [
        {"paginator": Paginator(limit=MAX_PAGE_LIMIT + 1)},
        {"paginator": Paginator(limit=-1)},
        {"paginator": Paginator("1")},
        {"sorter": "id"},
        {"filter": "WAITING"},
    ])
    def test_bad_arguments(self, farm, kwargs):
        farm.register(wuuid(1))
        farm.request()
        with pytest.raises(BadArgumentError):
            farm.scheduler.list_requests(**kwargs)


# ---------------------------------------------------------------- sorting
class TestSorting:
    @pytest.fixture
    def mixed(self, farm):
        """One request per state, with priorities and times that disagree with IDs."""
        f = farm
        f.idle(wuuid(1), {"pool": "a"})
        f.register(wuuid(2), {"pool": "b"})
        f.register(wuuid(3), {"pool": "c"})
        h = 3600.0
        # 1 DONE
        r1 = f.request({"pool": "a"}, priority=3, deadline=f.later(9 * h))
        f.done(r1)
        # 2 WAITING (not valid for a while)
        f.request(priority=3, valid_after=f.later(5 * h), deadline=f.later(7 * h))
        # 3 IN PROGRESS
        r3 = f.request({"pool": "a"}, priority=1, deadline=f.later(2 * h))
        assert f.request_state(r3) is RS.INPROGRESS
        # 4 CANCELLED
        r4 = f.request({"pool": "b"}, priority=16, deadline=f.later(8 * h))
        f.scheduler.close_request(r4)
        # 5 INVALID (its only worker leaves)
        f.request({"pool": "c"}, priority=3, deadline=f.later(6 * h))
        f.scheduler.deregister(wuuid(3))
        # 6 TIMEOUT
        f.request({"pool": "b"}, priority=1, deadline=f.later(0.5))
        f.tick(0.5)
        # 7 FAILED
        f.idle(wuuid(2))
        r7 = f.request({"pool": "b"}, priority=3, deadline=f.later(h))
        f.scheduler.set_fail(wuuid(2), "dead")
        f.drain()
        assert {r.id: r.state for r in f.scheduler.list_requests()[0]} == {
            1: RS.DONE, 2: RS.WAIT, 3: RS.INPROGRESS, 4: RS.CANCEL, 5: RS.INVALID,
            6: RS.TIMEOUT, 7: RS.FAILED}
        assert r7 == 7
        return f.scheduler

    def test_state_is_lexicographic_on_wire_string(self, mixed):
        got, _ = page_ids(mixed.list_requests(sorter=SortInfo("state")))
        # CANCELLED < DONE < FAILED < IN PROGRESS < INVALID < TIMEOUT < WAITING
        assert got == [4, 1, 7, 3, 5, 6, 2]
        got, _ = page_ids(mixed.list_requests(sorter=SortInfo("STATE", descending=True)))
        assert got == [2, 6, 5, 3, 7, 1, 4]

    def test_priority_ties_broken_by_id_in_the_same_order(self, mixed):
        got, _ = page_ids(mixed.list_requests(sorter=SortInfo("priority")))
        assert got == [3, 6, 1, 2, 5, 7, 4]
        got, _ = page_ids(mixed.list_requests(sorter=SortInfo("Priority", descending=True)))
        assert got == [4, 7, 5, 2, 1, 6, 3]

    def test_deadline_chronological(self, mixed):
        # deadlines: 1:+9h 2:+7h 3:+2h 4:+8h 5:+6h 6:+0.5h 7:+1h (created at different instants)
        got, _ = page_ids(mixed.list_requests(sorter=SortInfo("deadline")))
        infos = {r.id: r.deadline for r in mixed.list_requests()[0]}
        assert got == sorted(infos, key=lambda i: (infos[i], i))
        assert got[0] == 6 and got[-1] == 1

    def test_validafter_chronological_ties_by_id(self, mixed):
        got, _ = page_ids(mixed.list_requests(sorter=SortInfo("validafter")))
        infos = {r.id: r.valid_after for r in mixed.list_requests()[0]}
        assert got == sorted(infos, key=lambda i: (infos[i], i))
        assert got[-1] == 2
        desc, _ = page_ids(mixed.list_requests(sorter=SortInfo("ValidAfter", descending=True)))
        assert desc == sorted(infos, key=lambda i: (infos[i], i), reverse=True)

    @pytest.mark.parametrize("item", ["", "id", "ID", "Id"])
    def test_default_and_id(self, mixed, item):
        assert page_ids(mixed.list_requests(sorter=SortInfo(item)))[0] == list(range(1, 8))
        assert page_ids(mixed.list_requests(sorter=SortInfo(item, True)))[0] == list(
            range(7, 0, -1))

    def test_ties_with_equal_priority_and_pagination(self, farm):
        farm.register(wuuid(1))
        for prio in (5, 5, 2, 5, 2):
            farm.request(priority=prio)
        sorter = SortInfo("priority", descending=True)
        got, info = page_ids(farm.scheduler.list_requests(sorter=sorter,
                                                      paginator=Paginator(4, limit=2)))
        # descending: 4, 2, 1, 5, 3 (prio 5 with high IDs first)
        assert got == [2, 1] and info == ListInfo(5, 2)


# ---------------------------------------------------------------- ListWorkers
class TestListWorkers:
    @pytest.fixture
    def workers(self, farm):
        w = {n: wuuid(n) for n in range(1, 7)}
        farm.bring(w[5], WS.IDLE)                       # IDLE
        farm.scheduler.set_groups(w[5], ["b"])
        farm.bring(w[2], WS.MAINTENANCE)
        farm.scheduler.set_groups(w[2], ["a", "b"])
        farm.bring(w[4], WS.BUSY)
        farm.scheduler.set_groups(w[4], ["a"])
        farm.bring(w[1], WS.FAIL)
        farm.scheduler.set_groups(w[1], ["b", "a", "c"])    # stored sorted: a, b, c
        farm.bring(w[6], WS.PREPARE)
        farm.bring(w[3], WS.RUN)                          # no groups
        farm.scheduler.set_groups(w[6], ["a"])
        return farm.scheduler, w

    def uuids(self, result, w):
        page, info = result
        back = {v: k for k, v in w.items()}
        return [back[x.worker_uuid] for x in page], info

    def test_default_uuid_order(self, workers):
        sched, w = workers
        assert self.uuids(sched.list_workers(), w) == ([1, 2, 3, 4, 5, 6], ListInfo(6, 0))
        got = self.uuids(sched.list_workers(sorter=SortInfo("UUID", True)), w)
        assert got == ([6, 5, 4, 3, 2, 1], ListInfo(6, 0))

    def test_state_order(self, workers):
        sched, w = workers
        # BUSY < FAILED < IDLE < MAINTENANCE < PREPARE < RUNNING
        assert self.uuids(sched.list_workers(sorter=SortInfo("state")), w)[0] == [
            4, 1, 5, 2, 6, 3]
        assert self.uuids(sched.list_workers(sorter=SortInfo("State", True)), w)[0] == [
            3, 6, 2, 5, 1, 4]

    def test_groups_order(self, workers):
        sched, w = workers
        # () < (a) [4, 6] < (a, b) < (a, b, c) < (b); ties by uuid
        assert self.uuids(sched.list_workers(sorter=SortInfo("groups")), w)[0] == [
            3, 4, 6, 2, 1, 5]
        assert self.uuids(sched.list_workers(sorter=SortInfo("GROUPS", True)), w)[0] == [
            5, 1, 2, 6, 4, 3]

    def test_pagination(self, workers):
        sched, w = workers
        got = self.uuids(sched.list_workers(sorter=SortInfo("state"),
                                            paginator=Paginator(w[5], limit=2)), w)
        assert got == ([2, 6], ListInfo(6, 1))
        got = self.uuids(sched.list_workers(sorter=SortInfo("state"),
                                            paginator=Paginator(w[5], backward=True)), w)
        assert got == ([4, 1], ListInfo(6, 0))
        got = self.uuids(sched.list_workers(paginator=Paginator("", backward=True, limit=4)),
                         w)
        assert got == ([3, 4, 5, 6], ListInfo(6, 2))

    def test_filter_with_non_matching_border(self, workers):
        sched, w = workers
        flt = WorkerFilter(groups=("a",))                # matches 1, 2, 4, 6
        assert self.uuids(sched.list_workers(flt), w) == ([1, 2, 4, 6], ListInfo(4, 0))
        got = self.uuids(sched.list_workers(flt, paginator=Paginator(w[3], limit=1)), w)
        assert got == ([4], ListInfo(4, 1))
        got = self.uuids(sched.list_workers(flt, paginator=Paginator(w[3], backward=True)), w)
        assert got == ([1, 2], ListInfo(4, 0))

    def test_filter_caps_and_states(self, workers):
        sched, w = workers
        assert self.uuids(sched.list_workers(WorkerFilter(caps={"UUID": w[3]})), w)[0] == [3]
        flt = WorkerFilter(states=(WS.IDLE, WS.RUN))
        assert self.uuids(sched.list_workers(flt), w)[0] == [3, 5]

    def test_errors(self, workers):
        sched, w = workers
        with pytest.raises(NotFoundError) as err:
            sched.list_workers(paginator=Paginator("nobody"))
        assert str(err.value) == "worker not found"
        with pytest.raises(WrongSortItemError) as err:
            sched.list_workers(sorter=SortInfo("id"))
        assert str(err.value) == "unknown sort item 'id': use one of uuid, state, groups"
        with pytest.raises(BadArgumentError):
            sched.list_workers(paginator=Paginator(3))

    def test_empty(self, farm):
        assert farm.scheduler.list_workers() == ([], ListInfo(0, 0))

    def test_default_paginator_accepted_and_untouched(self, workers):
        sched, _ = workers
        pag = Paginator(limit=0)
        sched.list_workers(paginator=pag)
        sched.list_requests(paginator=pag.__class__(0, False, 0))
        assert pag.limit == 0

    def test_info_is_a_copy(self, workers):
        sched, w = workers
        page, _ = sched.list_workers()
        page[0].caps["UUID"] = "mutated"
        assert sched.get_worker_info(w[1]).caps["UUID"] == w[1]
        assert isinstance(page[0].groups, tuple)

    def test_owner_groups_shown(self, farm):
        farm.register(wuuid(1))
        farm.scheduler.set_groups(wuuid(1), ["x"])
        req_id = farm.request(owner=UserInfo(("x", "a")))
        assert farm.scheduler.get_request_info(req_id).owner == UserInfo(("a", "x"))
