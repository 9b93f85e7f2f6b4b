# cython: language_level=3
"""The compiled matcher: same decisions as `boruta.core.reference`, incrementally.

Contract: `ReferenceMatcher` (boruta/core/reference.py). `match()` returns
exactly the reference's assignments, in the same order; the differential test
(tests/test_matcher_differential.py) is the proof.

Why incremental works. After `match()` returns, no ready request matches any
idle worker (otherwise the reference's pass would have assigned it). So the
next `match()` only has to look at what changed since: *pending classes* (the
classes of requests added while some worker was idle) and *pending workers*
(workers that turned idle, or were updated while idle, while some request was
ready). During `match()` things are only removed, so the candidates are kept
in a lazy heap whose entries are lower bounds of their true value:

- a class entry: the class's head (its best ready request). Popped: if the
  head changed, re-push the current head; else ask the bitsets for the best
  idle worker for the class; none -> the whole class is dead for this match
  (all its requests want the same thing); else assign.
- a worker entry: the best head among the classes the (idle) worker serves,
  found by walking the class trie along the worker's own caps. Popped: if the
  worker is no longer idle, drop; if the head moved, walk again.

The popped valid entry is the smallest ready request that some idle worker
serves, i.e. the request the reference's pass would serve next; its worker is
the best idle worker for it, found with the rank bitsets below.

Data layout
-----------
* Every `key=value` cap (except `UUID`) and every group is interned to a small
  integer ("bit"). A request cap `UUID=X` pins the request to workers whose
  own caps say `UUID=X` (kept in per-value indexes, not in the bitsets).
* Workers are ranked by (penalty, uuid), penalty = len(caps incl. UUID) +
  len(groups), the reference's "best worker" order. Inverted bitsets over
  ranks: one row per cap bit, one per group, one of registered workers, one of
  idle workers (`nwords` 64-bit words each). The first set bit of
  idle & AND(cap rows) & OR(group rows) is the best idle worker for a request;
  with the registered row instead of idle it answers `satisfiable()`.
  Ranks are rebuilt lazily (on the next query) after add_worker or a penalty
  change; removals just leave a hole.
* Requests with the same (cap bits, group bits, pinned UUID) form a class.
  Each class keeps its ready requests in a binary min-heap (C array) of packed
  uint64 keys:  (priority-1) << 60 | seq << 24 | slot.
  Ties on (priority, seq) are broken by request id, as the reference does.
  Unpinned classes hang in a trie over their sorted cap bits (child per bit),
  with per-node C arrays of class ids by group, so a worker turning idle
  visits only classes whose caps it has and whose groups it shares (or that
  have none); subtrees with no classes are skipped. Each class's head key is
  mirrored in one C array (`cls_head`), read by the walk. Empty classes are
  deleted.
* Per-request data lives in C arrays indexed by slot (slots are reused):
  key (8 B), request id (8 B), class id (4 B), heap position (4 B); plus the
  heap entry (8 B) and a request-id -> slot open-addressing table of int32
  (load <= 1/2). About 45 bytes per ready request at 10**6 (power-of-two
  growth included); no Python object per request. Each *class* costs a few
  hundred bytes of Python objects (class object, key tuples, dict entry).

Limits: priority 1..16 (4 bits), 0 <= seq < 2**36, at most 2**24 ready
requests at once (slot bits), request ids fit in int64. The handle returned by
`add_request` is `seq << 24 | slot` (a stale handle raises KeyError unless
the same seq was reused). Interned caps/groups and trie nodes are never
freed (bounded by the distinct strings ever seen). Cap values must be
hashable and not None.
"""
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport uint64_t, int64_t, int32_t
from libc.string cimport memset
cimport cython

import heapq

cdef extern from *:
    """
    static inline int boruta_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    """
    int boruta_ctz64(unsigned long long x) nogil

UUID_KEY = "UUID"

cdef int SLOT_BITS = 24
cdef uint64_t SLOT_MASK = (<uint64_t>1 << 24) - 1
cdef uint64_t LOW60 = (<uint64_t>1 << 60) - 1
cdef int64_t MAX_SEQ = (<int64_t>1 << 36)
cdef Py_ssize_t MAX_SLOTS = (<Py_ssize_t>1 << 24)
# match() walks the trie for each pending worker unless there are more than
# WALK_LIMIT of them or more than 1/WALK_RATIO of the classes: then it simply
# offers every class (cheaper in bulk, e.g. a whole farm turning idle).
cdef Py_ssize_t WALK_LIMIT = 32
cdef Py_ssize_t WALK_RATIO = 8

cdef object NOPIN = object()


cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef void* _realloc(void* p, size_t n) except NULL:
    cdef void* q = PyMem_Realloc(p, n if n else 1)
    if q == NULL:
        raise MemoryError()
    return q


@cython.no_gc
cdef class _Worker:
    cdef str uuid
    cdef tuple bits          # sorted interned cap bits (UUID excluded)
    cdef tuple gids          # sorted distinct interned groups
    cdef Py_ssize_t penalty
    cdef object uuidcap      # caps["UUID"] or NOPIN
    cdef bint idle
    cdef Py_ssize_t rank


@cython.no_gc
cdef class _IntArr:
    """A small unordered C array of class ids."""
    cdef int32_t* data
    cdef Py_ssize_t n
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.data = NULL
        self.n = 0
        self.cap = 0

    def __dealloc__(self):
        PyMem_Free(self.data)

    cdef int append(self, int32_t x) except -1:
        cdef Py_ssize_t newcap
        if self.n >= self.cap:
            newcap = self.cap * 2 if self.cap else 4
            self.data = <int32_t*>_realloc(self.data, newcap * sizeof(int32_t))
            self.cap = newcap
        self.data[self.n] = x
        self.n += 1
        return 0

    cdef void discard(self, int32_t x) noexcept:
        cdef Py_ssize_t i
        for i in range(self.n):
            if self.data[i] == x:
                self.n -= 1
                self.data[i] = self.data[self.n]
                return


# Nodes refer to classes by id only, so there are no reference cycles and
# these types can stay out of the cyclic garbage collector.
@cython.no_gc
cdef class _Node:
    cdef dict children       # bit -> _Node
    cdef Py_ssize_t live     # classes in this subtree
    cdef int32_t nogroup     # id of the class with these caps and no groups, or -1
    cdef dict by_group       # gid -> _IntArr of ids of classes holding that group

    def __cinit__(self):
        self.children = {}
        self.by_group = {}
        self.live = 0
        self.nogroup = -1


@cython.no_gc
cdef class _Class:
    cdef Py_ssize_t cid
    cdef object key
    cdef tuple bits
    cdef tuple gids
    cdef object pin
    cdef bint pinned
    cdef uint64_t* heap
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef int32_t* cbits
    cdef int nc
    cdef int32_t* cg
    cdef int ng
    cdef list path           # trie nodes root..leaf (unpinned only)

    def __cinit__(self):
        self.heap = NULL
        self.cbits = NULL
        self.cg = NULL
        self.size = 0
        self.cap = 0

    def __dealloc__(self):
        PyMem_Free(self.heap)
        PyMem_Free(self.cbits)
        PyMem_Free(self.cg)


cdef struct Best:
    uint64_t key
    Py_ssize_t cid


cdef class CompiledMatcher:
    """Compiled twin of `ReferenceMatcher`; see the module docstring."""

    compiled = True

    # workers
    cdef dict workers                # uuid -> _Worker
    cdef list rank_w                 # rank -> _Worker or None (hole)
    cdef bint dirty
    cdef Py_ssize_t nwords
    cdef uint64_t* cap_rows
    cdef Py_ssize_t cap_rows_cap
    cdef uint64_t* grp_rows
    cdef Py_ssize_t grp_rows_cap
    cdef uint64_t* idle_row
    cdef uint64_t* all_row
    cdef dict cap_ids                # (key, value) -> bit
    cdef dict grp_ids                # group -> gid
    cdef dict uuidcap_idx            # caps["UUID"] value -> list of _Worker
    cdef Py_ssize_t n_idle
    # requests
    cdef uint64_t* s_key
    cdef int64_t* s_req
    cdef int32_t* s_cls
    cdef int32_t* s_pos
    cdef Py_ssize_t s_cap
    cdef Py_ssize_t s_used
    cdef int32_t s_free
    cdef Py_ssize_t n_ready
    cdef int32_t* ht
    cdef Py_ssize_t ht_cap
    # classes
    cdef dict class_ids              # class key -> cid
    cdef list classes                # cid -> _Class or None
    cdef list free_cids
    cdef Py_ssize_t n_classes
    cdef Py_ssize_t heap_bytes
    cdef uint64_t* cls_head          # cid -> key of the class's best request
    cdef Py_ssize_t cls_head_cap
    cdef _Node root
    cdef dict pin_idx                # pinned value -> list of _Class
    # changes since the last match()
    cdef set pend_classes
    cdef set pend_workers
    cdef Py_ssize_t walk_limit
    cdef Py_ssize_t walk_ratio

    def __cinit__(self):
        self.workers = {}
        self.rank_w = []
        self.dirty = False
        self.nwords = 1
        self.cap_rows_cap = 16
        self.grp_rows_cap = 16
        self.cap_rows = <uint64_t*>_realloc(NULL, 16 * sizeof(uint64_t))
        self.grp_rows = <uint64_t*>_realloc(NULL, 16 * sizeof(uint64_t))
        self.idle_row = <uint64_t*>_realloc(NULL, sizeof(uint64_t))
        self.all_row = <uint64_t*>_realloc(NULL, sizeof(uint64_t))
        memset(self.cap_rows, 0, 16 * sizeof(uint64_t))
        memset(self.grp_rows, 0, 16 * sizeof(uint64_t))
        self.idle_row[0] = 0
        self.all_row[0] = 0
        self.cap_ids = {}
        self.grp_ids = {}
        self.uuidcap_idx = {}
        self.n_idle = 0
        self.s_cap = 1024
        self.s_key = <uint64_t*>_realloc(NULL, self.s_cap * sizeof(uint64_t))
        self.s_req = <int64_t*>_realloc(NULL, self.s_cap * sizeof(int64_t))
        self.s_cls = <int32_t*>_realloc(NULL, self.s_cap * sizeof(int32_t))
        self.s_pos = <int32_t*>_realloc(NULL, self.s_cap * sizeof(int32_t))
        self.s_used = 0
        self.s_free = -1
        self.n_ready = 0
        self.ht_cap = 2048
        self.ht = <int32_t*>_realloc(NULL, self.ht_cap * sizeof(int32_t))
        memset(self.ht, 0xff, self.ht_cap * sizeof(int32_t))
        self.class_ids = {}
        self.classes = []
        self.free_cids = []
        self.n_classes = 0
        self.heap_bytes = 0
        self.cls_head_cap = 64
        self.cls_head = <uint64_t*>_realloc(NULL, 64 * sizeof(uint64_t))
        self.root = _Node()
        self.pin_idx = {}
        self.pend_classes = set()
        self.pend_workers = set()
        self.walk_limit = WALK_LIMIT
        self.walk_ratio = WALK_RATIO

    def __dealloc__(self):
        PyMem_Free(self.cap_rows)
        PyMem_Free(self.grp_rows)
        PyMem_Free(self.idle_row)
        PyMem_Free(self.all_row)
        PyMem_Free(self.s_key)
        PyMem_Free(self.s_req)
        PyMem_Free(self.s_cls)
        PyMem_Free(self.s_pos)
        PyMem_Free(self.ht)
        PyMem_Free(self.cls_head)

    # ================================================================ interning
    cdef Py_ssize_t _intern_cap(self, object kv) except -1:
        cdef object b = self.cap_ids.get(kv)
        cdef Py_ssize_t n, newcap
        if b is not None:
            return b
        n = len(self.cap_ids)
        if n >= self.cap_rows_cap:
            newcap = self.cap_rows_cap * 2
            self.cap_rows = <uint64_t*>_realloc(self.cap_rows,
                                                newcap * self.nwords * sizeof(uint64_t))
            memset(self.cap_rows + self.cap_rows_cap * self.nwords, 0,
                   (newcap - self.cap_rows_cap) * self.nwords * sizeof(uint64_t))
            self.cap_rows_cap = newcap
        self.cap_ids[kv] = n
        return n

    cdef Py_ssize_t _intern_grp(self, object g) except -1:
        cdef object b = self.grp_ids.get(g)
        cdef Py_ssize_t n, newcap
        if b is not None:
            return b
        n = len(self.grp_ids)
        if n >= self.grp_rows_cap:
            newcap = self.grp_rows_cap * 2
            self.grp_rows = <uint64_t*>_realloc(self.grp_rows,
                                                newcap * self.nwords * sizeof(uint64_t))
            memset(self.grp_rows + self.grp_rows_cap * self.nwords, 0,
                   (newcap - self.grp_rows_cap) * self.nwords * sizeof(uint64_t))
            self.grp_rows_cap = newcap
        self.grp_ids[g] = n
        return n

    # ================================================================ workers
    cdef _Worker _fill_worker(self, _Worker w, object caps, object groups):
        cdef dict c = dict(caps)
        cdef tuple gs = tuple(groups)
        cdef list bits = []
        for k, v in c.items():
            if k == UUID_KEY:
                continue
            bits.append(self._intern_cap((k, v)))
        bits.sort()
        w.bits = tuple(bits)
        w.gids = tuple(sorted({self._intern_grp(g) for g in gs}))
        w.penalty = len(c) + len(gs)
        w.uuidcap = c[UUID_KEY] if UUID_KEY in c else NOPIN
        return w

    cdef void _uuidcap_add(self, _Worker w):
        if w.uuidcap is not NOPIN:
            lst = self.uuidcap_idx.get(w.uuidcap)
            if lst is None:
                self.uuidcap_idx[w.uuidcap] = [w]
            else:
                lst.append(w)

    cdef int _uuidcap_del(self, _Worker w) except -1:
        cdef list lst
        if w.uuidcap is not NOPIN:
            lst = self.uuidcap_idx[w.uuidcap]
            lst.remove(w)
            if not lst:
                del self.uuidcap_idx[w.uuidcap]
        return 0

    cdef void _set_rows(self, _Worker w, bint on):
        """Set or clear w's cap/group/registered bits at its rank (ranks fresh)."""
        cdef Py_ssize_t r = w.rank
        cdef Py_ssize_t word = r >> 6
        cdef uint64_t m = (<uint64_t>1) << (r & 63)
        cdef Py_ssize_t nw = self.nwords
        cdef Py_ssize_t b
        for ob in w.bits:
            b = ob
            if on:
                self.cap_rows[b * nw + word] |= m
            else:
                self.cap_rows[b * nw + word] &= ~m
        for ob in w.gids:
            b = ob
            if on:
                self.grp_rows[b * nw + word] |= m
            else:
                self.grp_rows[b * nw + word] &= ~m
        if on:
            self.all_row[word] |= m
        else:
            self.all_row[word] &= ~m

    cdef inline void _set_idle_bit(self, _Worker w, bint on):
        cdef Py_ssize_t r = w.rank
        cdef uint64_t m = (<uint64_t>1) << (r & 63)
        if on:
            self.idle_row[r >> 6] |= m
        else:
            self.idle_row[r >> 6] &= ~m

    cdef int _ensure_ranks(self) except -1:
        cdef list ws
        cdef Py_ssize_t n, nw, r
        cdef _Worker w
        if not self.dirty:
            return 0
        ws = list(self.workers.values())
        ws.sort(key=_rank_key)
        n = len(ws)
        nw = (n + 63) >> 6
        if nw < 1:
            nw = 1
        self.nwords = nw
        self.cap_rows = <uint64_t*>_realloc(self.cap_rows, self.cap_rows_cap * nw * sizeof(uint64_t))
        self.grp_rows = <uint64_t*>_realloc(self.grp_rows, self.grp_rows_cap * nw * sizeof(uint64_t))
        self.idle_row = <uint64_t*>_realloc(self.idle_row, nw * sizeof(uint64_t))
        self.all_row = <uint64_t*>_realloc(self.all_row, nw * sizeof(uint64_t))
        memset(self.cap_rows, 0, self.cap_rows_cap * nw * sizeof(uint64_t))
        memset(self.grp_rows, 0, self.grp_rows_cap * nw * sizeof(uint64_t))
        memset(self.idle_row, 0, nw * sizeof(uint64_t))
        memset(self.all_row, 0, nw * sizeof(uint64_t))
        for r in range(n):
            w = ws[r]
            w.rank = r
            self._set_rows(w, True)
            if w.idle:
                self._set_idle_bit(w, True)
        self.rank_w = ws
        self.dirty = False
        return 0

    def add_worker(self, uuid, caps, groups):
        if uuid in self.workers:
            raise KeyError(f"worker {uuid} already in matcher")
        cdef _Worker w = _Worker()
        w.uuid = uuid
        w.idle = False
        w.rank = -1
        self._fill_worker(w, caps, groups)
        self.workers[uuid] = w
        self._uuidcap_add(w)
        self.dirty = True

    def update_worker(self, uuid, caps, groups):
        cdef _Worker w = self.workers[uuid]
        cdef Py_ssize_t old_penalty = w.penalty
        self._uuidcap_del(w)
        if not self.dirty:
            self._set_rows(w, False)
        self._fill_worker(w, caps, groups)
        self._uuidcap_add(w)
        if not self.dirty:
            if w.penalty == old_penalty:
                self._set_rows(w, True)
            else:
                self.dirty = True
        if w.idle and self.n_ready > 0:
            self.pend_workers.add(w)

    def remove_worker(self, uuid):
        cdef _Worker w = self.workers.pop(uuid)
        self._uuidcap_del(w)
        if not self.dirty:
            self._set_rows(w, False)
            self._set_idle_bit(w, False)
            self.rank_w[w.rank] = None
        if w.idle:
            self.n_idle -= 1
            w.idle = False
        self.pend_workers.discard(w)

    def set_idle(self, uuid, idle):
        cdef _Worker w = self.workers[uuid]
        if idle:
            if not w.idle:
                w.idle = True
                self.n_idle += 1
                if not self.dirty:
                    self._set_idle_bit(w, True)
                if self.n_ready > 0:
                    self.pend_workers.add(w)
        elif w.idle:
            w.idle = False
            self.n_idle -= 1
            if not self.dirty:
                self._set_idle_bit(w, False)

    # ================================================================ request slots
    cdef int _grow_slots(self) except -1:
        cdef Py_ssize_t n = self.s_cap * 2
        if n > MAX_SLOTS:
            n = MAX_SLOTS
        if n <= self.s_cap:
            raise OverflowError("too many ready requests in the matcher (limit 2**24)")
        self.s_key = <uint64_t*>_realloc(self.s_key, n * sizeof(uint64_t))
        self.s_req = <int64_t*>_realloc(self.s_req, n * sizeof(int64_t))
        self.s_cls = <int32_t*>_realloc(self.s_cls, n * sizeof(int32_t))
        self.s_pos = <int32_t*>_realloc(self.s_pos, n * sizeof(int32_t))
        self.s_cap = n
        return 0

    cdef Py_ssize_t _alloc_slot(self) except -1:
        cdef Py_ssize_t slot
        if self.s_free >= 0:
            slot = self.s_free
            self.s_free = self.s_pos[slot]
            return slot
        if self.s_used >= self.s_cap:
            self._grow_slots()
        slot = self.s_used
        self.s_used += 1
        return slot

    cdef inline void _free_slot(self, Py_ssize_t slot):
        self.s_cls[slot] = -1
        self.s_pos[slot] = self.s_free
        self.s_free = <int32_t>slot

    # request id -> slot: linear probing over int32 slots, -1 = empty
    cdef Py_ssize_t _ht_find(self, int64_t req):
        cdef Py_ssize_t mask = self.ht_cap - 1
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(<uint64_t>req) & mask)
        cdef int32_t s
        while True:
            s = self.ht[i]
            if s < 0:
                return -1
            if self.s_req[s] == req:
                return s
            i = (i + 1) & mask

    cdef void _ht_put(self, Py_ssize_t slot):
        cdef Py_ssize_t mask = self.ht_cap - 1
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(<uint64_t>self.s_req[slot]) & mask)
        while self.ht[i] >= 0:
            i = (i + 1) & mask
        self.ht[i] = <int32_t>slot

    cdef int _ht_insert(self, Py_ssize_t slot) except -1:
        cdef int32_t* old
        cdef Py_ssize_t oldcap, i
        if (self.n_ready + 1) * 2 > self.ht_cap:
            old = self.ht
            oldcap = self.ht_cap
            self.ht = <int32_t*>PyMem_Malloc(oldcap * 2 * sizeof(int32_t))
            if self.ht == NULL:
                self.ht = old
                raise MemoryError()
            self.ht_cap = oldcap * 2
            memset(self.ht, 0xff, self.ht_cap * sizeof(int32_t))
            for i in range(oldcap):
                if old[i] >= 0:
                    self._ht_put(old[i])
            PyMem_Free(old)
        self._ht_put(slot)
        return 0

    cdef void _ht_delete(self, Py_ssize_t slot):
        cdef Py_ssize_t mask = self.ht_cap - 1
        cdef int64_t req = self.s_req[slot]
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(<uint64_t>req) & mask)
        cdef Py_ssize_t j, k
        while self.ht[i] != slot:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self.ht[j] < 0:
                break
            k = <Py_ssize_t>(_mix(<uint64_t>self.s_req[self.ht[j]]) & mask)
            if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
                self.ht[i] = self.ht[j]
                i = j
        self.ht[i] = -1

    # ================================================================ class heaps
    cdef inline bint _lt(self, uint64_t a, uint64_t b) noexcept:
        """(priority, seq) order, ties by request id as the reference sorts."""
        if (a >> 24) != (b >> 24):
            return a < b
        return self.s_req[a & SLOT_MASK] < self.s_req[b & SLOT_MASK]

    cdef void _sift_up(self, _Class c, Py_ssize_t i):
        cdef uint64_t* h = c.heap
        cdef uint64_t x = h[i]
        cdef Py_ssize_t p
        while i > 0:
            p = (i - 1) >> 1
            if not self._lt(x, h[p]):
                break
            h[i] = h[p]
            self.s_pos[h[i] & SLOT_MASK] = <int32_t>i
            i = p
        h[i] = x
        self.s_pos[x & SLOT_MASK] = <int32_t>i

    cdef void _sift_down(self, _Class c, Py_ssize_t i):
        cdef uint64_t* h = c.heap
        cdef Py_ssize_t n = c.size
        cdef uint64_t x = h[i]
        cdef Py_ssize_t ch
        while True:
            ch = 2 * i + 1
            if ch >= n:
                break
            if ch + 1 < n and self._lt(h[ch + 1], h[ch]):
                ch += 1
            if not self._lt(h[ch], x):
                break
            h[i] = h[ch]
            self.s_pos[h[i] & SLOT_MASK] = <int32_t>i
            i = ch
        h[i] = x
        self.s_pos[x & SLOT_MASK] = <int32_t>i

    cdef int _heap_push(self, _Class c, uint64_t key) except -1:
        cdef Py_ssize_t newcap
        if c.size >= c.cap:
            newcap = c.cap * 2 if c.cap else 2
            c.heap = <uint64_t*>_realloc(c.heap, newcap * sizeof(uint64_t))
            self.heap_bytes += (newcap - c.cap) * sizeof(uint64_t)
            c.cap = newcap
        c.heap[c.size] = key
        c.size += 1
        self._sift_up(c, c.size - 1)
        self.cls_head[c.cid] = c.heap[0]
        return 0

    cdef void _heap_remove(self, _Class c, Py_ssize_t i):
        cdef uint64_t last
        c.size -= 1
        if i < c.size:
            last = c.heap[c.size]
            c.heap[i] = last
            self.s_pos[last & SLOT_MASK] = <int32_t>i
            self._sift_down(c, i)
            self._sift_up(c, self.s_pos[last & SLOT_MASK])
        if c.size:
            self.cls_head[c.cid] = c.heap[0]

    # ================================================================ classes
    cdef _Class _get_class(self, object key, tuple bits, tuple gids, bint pinned, object pin):
        cdef object ocid = self.class_ids.get(key)
        cdef _Class c
        cdef _Node node, child
        cdef Py_ssize_t cid, i
        if ocid is not None:
            return self.classes[ocid]
        c = _Class()
        c.key = key
        c.bits = bits
        c.gids = gids
        c.pinned = pinned
        c.pin = pin
        c.nc = len(bits)
        c.ng = len(gids)
        c.cbits = <int32_t*>_realloc(NULL, (c.nc + 1) * sizeof(int32_t))
        c.cg = <int32_t*>_realloc(NULL, (c.ng + 1) * sizeof(int32_t))
        for i in range(c.nc):
            c.cbits[i] = <int32_t>bits[i]
        for i in range(c.ng):
            c.cg[i] = <int32_t>gids[i]
        if self.free_cids:
            cid = self.free_cids.pop()
            self.classes[cid] = c
        else:
            cid = len(self.classes)
            if cid >= self.cls_head_cap:
                self.cls_head = <uint64_t*>_realloc(self.cls_head,
                                                    2 * self.cls_head_cap * sizeof(uint64_t))
                self.cls_head_cap *= 2
            self.classes.append(c)
        c.cid = cid
        self.class_ids[key] = cid
        self.n_classes += 1
        if pinned:
            lst = self.pin_idx.get(pin)
            if lst is None:
                self.pin_idx[pin] = [c]
            else:
                lst.append(c)
            c.path = None
        else:
            node = self.root
            path = [node]
            for b in bits:
                child = node.children.get(b)
                if child is None:
                    child = _Node()
                    node.children[b] = child
                node = child
                path.append(node)
            if c.ng == 0:
                node.nogroup = <int32_t>cid
            else:
                for g in gids:
                    arr = node.by_group.get(g)
                    if arr is None:
                        arr = _IntArr()
                        node.by_group[g] = arr
                    (<_IntArr>arr).append(<int32_t>cid)
            for node in path:
                node.live += 1
            c.path = path
        return c

    cdef int _drop_class(self, _Class c) except -1:
        cdef _Node node
        cdef list lst
        del self.class_ids[c.key]
        self.classes[c.cid] = None
        self.free_cids.append(c.cid)
        self.n_classes -= 1
        self.heap_bytes -= c.cap * sizeof(uint64_t)
        if c.pinned:
            lst = self.pin_idx[c.pin]
            lst.remove(c)
            if not lst:
                del self.pin_idx[c.pin]
        else:
            node = c.path[len(c.path) - 1]
            if c.ng == 0:
                node.nogroup = -1
            else:
                for g in c.gids:
                    arr = <_IntArr>node.by_group[g]
                    arr.discard(<int32_t>c.cid)
                    if arr.n == 0:
                        del node.by_group[g]
            for node in c.path:
                node.live -= 1
            c.path = None
        return 0

    # ================================================================ requests
    def add_request(self, req_id, caps, groups, priority, seq):
        cdef int64_t req = req_id
        cdef int64_t prio = priority
        cdef int64_t sq = seq
        cdef dict c
        cdef list bits
        cdef bint pinned
        cdef object pin
        cdef _Class cls
        cdef Py_ssize_t slot
        cdef uint64_t key
        if prio < 1 or prio > 16:
            raise ValueError(f"priority {priority} outside 1..16")
        if sq < 0 or sq >= MAX_SEQ:
            raise ValueError(f"seq {seq} outside 0..2**36-1")
        if self._ht_find(req) >= 0:
            raise KeyError(f"request {req_id} already in matcher")
        c = dict(caps)
        pinned = UUID_KEY in c
        pin = c[UUID_KEY] if pinned else NOPIN
        bits = []
        for k, v in c.items():
            if k == UUID_KEY:
                continue
            bits.append(self._intern_cap((k, v)))
        bits.sort()
        tb = tuple(bits)
        tg = tuple(sorted({self._intern_grp(g) for g in groups}))
        cls = self._get_class((tb, tg, pinned, pin) if pinned else (tb, tg), tb, tg, pinned, pin)
        slot = self._alloc_slot()
        key = (<uint64_t>(prio - 1) << 60) | (<uint64_t>sq << 24) | <uint64_t>slot
        self.s_key[slot] = key
        self.s_req[slot] = req
        self.s_cls[slot] = <int32_t>cls.cid
        self._heap_push(cls, key)
        self._ht_insert(slot)
        self.n_ready += 1
        if self.n_idle > 0:
            self.pend_classes.add(cls.cid)
        return <object>(key & LOW60)

    cdef int _remove_slot(self, Py_ssize_t slot) except -1:
        cdef _Class cls = <_Class>self.classes[self.s_cls[slot]]
        self._heap_remove(cls, self.s_pos[slot])
        self._ht_delete(slot)
        self._free_slot(slot)
        self.n_ready -= 1
        if cls.size == 0:
            self._drop_class(cls)
        return 0

    def remove_request(self, handle):
        cdef Py_ssize_t slot
        if not isinstance(handle, int) or handle < 0 or handle > <object>LOW60:
            raise KeyError(handle)
        slot = <Py_ssize_t>(<uint64_t>handle & SLOT_MASK)
        if (slot >= self.s_used or self.s_cls[slot] < 0
                or (self.s_key[slot] & LOW60) != <uint64_t>handle):
            raise KeyError(handle)
        self._remove_slot(slot)

    # ================================================================ queries
    cdef Py_ssize_t _scan(self, uint64_t* base, int32_t* cbits, int nc,
                          int32_t* cg, int ng) noexcept:
        """First rank set in base & AND(cap rows) & OR(group rows), or -1."""
        cdef Py_ssize_t nw = self.nwords
        cdef Py_ssize_t wi
        cdef int j
        cdef uint64_t x, y
        cdef uint64_t* cr = self.cap_rows
        cdef uint64_t* gr = self.grp_rows
        for wi in range(nw):
            x = base[wi]
            if x == 0:
                continue
            for j in range(nc):
                x &= cr[cbits[j] * nw + wi]
                if x == 0:
                    break
            if x == 0:
                continue
            if ng:
                y = 0
                for j in range(ng):
                    y |= gr[cg[j] * nw + wi]
                x &= y
                if x == 0:
                    continue
            return (wi << 6) + boruta_ctz64(x)
        return -1

    cdef inline bint _row_has(self, uint64_t* rows, Py_ssize_t row, Py_ssize_t r) noexcept:
        return (rows[row * self.nwords + (r >> 6)] >> (r & 63)) & 1

    cdef bint _worker_serves(self, _Worker w, int32_t* cbits, int nc, int32_t* cg, int ng) noexcept:
        cdef int j
        cdef Py_ssize_t r = w.rank
        for j in range(nc):
            if not self._row_has(self.cap_rows, cbits[j], r):
                return False
        if ng == 0:
            return True
        for j in range(ng):
            if self._row_has(self.grp_rows, cg[j], r):
                return True
        return False

    cdef Py_ssize_t _best_pinned(self, object pin, int32_t* cbits, int nc,
                                 int32_t* cg, int ng, bint idle_only):
        cdef Py_ssize_t best = -1
        cdef _Worker w
        lst = self.uuidcap_idx.get(pin)
        if lst is None:
            return -1
        for ow in lst:
            w = <_Worker>ow
            if idle_only and not w.idle:
                continue
            if (best < 0 or w.rank < best) and self._worker_serves(w, cbits, nc, cg, ng):
                best = w.rank
        return best

    cdef Py_ssize_t _best_for_class(self, _Class c):
        if c.pinned:
            return self._best_pinned(c.pin, c.cbits, c.nc, c.cg, c.ng, True)
        return self._scan(self.idle_row, c.cbits, c.nc, c.cg, c.ng)

    cdef inline void _consider(self, Py_ssize_t cid, Best* best) noexcept:
        cdef uint64_t k = self.cls_head[cid]
        if best.cid < 0 or self._lt(k, best.key):
            best.key = k
            best.cid = cid

    cdef int _walk(self, _Node node, tuple bits, Py_ssize_t i, tuple gids, Best* best) except -1:
        cdef _Node child
        cdef Py_ssize_t j, n
        cdef dict byg, ch
        cdef _IntArr arr
        cdef Py_ssize_t k
        if node.nogroup >= 0:
            self._consider(node.nogroup, best)
        byg = node.by_group
        if byg:
            for g in gids:
                oarr = byg.get(g)
                if oarr is not None:
                    arr = <_IntArr>oarr
                    for k in range(arr.n):
                        self._consider(arr.data[k], best)
        ch = node.children
        if ch:
            n = len(bits)
            for j in range(i, n):
                och = ch.get(bits[j])
                if och is not None:
                    child = <_Node>och
                    if child.live > 0:
                        self._walk(child, bits, j + 1, gids, best)
        return 0

    cdef int _worker_best(self, _Worker w, Best* best) except -1:
        """Best head among the classes idle worker w serves (ranks fresh)."""
        cdef _Class c
        best.cid = -1
        best.key = 0
        if self.root.live > 0:
            self._walk(self.root, w.bits, 0, w.gids, best)
        if w.uuidcap is not NOPIN:
            lst = self.pin_idx.get(w.uuidcap)
            if lst is not None:
                for oc in <list>lst:
                    c = <_Class>oc
                    if self._worker_serves(w, c.cbits, c.nc, c.cg, c.ng):
                        self._consider(c.cid, best)
        return 0

    # ================================================================ match
    def match(self):
        cdef list made = []
        cdef list H
        cdef list pw
        cdef _Worker w, taker
        cdef _Class c
        cdef Best best
        cdef Py_ssize_t n = 0, rank, slot, cid
        cdef uint64_t head
        cdef int64_t req
        if not self.pend_classes and not self.pend_workers:
            return made
        if self.n_idle == 0 or self.n_ready == 0:
            self.pend_classes.clear()
            self.pend_workers.clear()
            return made
        self._ensure_ranks()
        pw = [ow for ow in self.pend_workers if (<_Worker>ow).idle]
        H = []
        if len(pw) > self.walk_limit or len(pw) * self.walk_ratio > self.n_classes:
            for oc in self.classes:
                if oc is not None:
                    c = <_Class>oc
                    head = c.heap[0]
                    H.append((head >> 24, self.s_req[head & SLOT_MASK], 0, c.cid, 0, None))
        else:
            for ocid in self.pend_classes:
                oc = self.classes[ocid]
                if oc is not None:
                    c = <_Class>oc
                    head = c.heap[0]
                    H.append((head >> 24, self.s_req[head & SLOT_MASK], 0, c.cid, 0, None))
            for ow in pw:
                w = <_Worker>ow
                self._worker_best(w, &best)
                if best.cid >= 0:
                    n += 1
                    H.append((best.key >> 24, self.s_req[best.key & SLOT_MASK], 1, best.cid, n, w))
        self.pend_classes.clear()
        self.pend_workers.clear()
        heapq.heapify(H)
        while H and self.n_idle > 0:
            k60, rq, kind, cid, _, ow = heapq.heappop(H)
            oc = self.classes[cid]
            if oc is None:                      # emptied during this match
                if kind == 1 and (<_Worker>ow).idle:
                    w = <_Worker>ow
                    self._worker_best(w, &best)
                    if best.cid >= 0:
                        n += 1
                        heapq.heappush(H, (best.key >> 24, self.s_req[best.key & SLOT_MASK],
                                           1, best.cid, n, w))
                continue
            c = <_Class>oc
            head = c.heap[0]
            if (head >> 24) != <uint64_t>k60 or self.s_req[head & SLOT_MASK] != <int64_t>rq:
                # the head was served: the entry is stale (a lower bound)
                if kind == 0:
                    heapq.heappush(H, (head >> 24, self.s_req[head & SLOT_MASK], 0, cid, 0, None))
                elif (<_Worker>ow).idle:
                    w = <_Worker>ow
                    self._worker_best(w, &best)
                    if best.cid >= 0:
                        n += 1
                        heapq.heappush(H, (best.key >> 24, self.s_req[best.key & SLOT_MASK],
                                           1, best.cid, n, w))
                continue
            if kind == 1 and not (<_Worker>ow).idle:
                continue
            rank = self._best_for_class(c)
            if rank < 0:                        # nobody idle serves this class any more
                continue
            taker = <_Worker>self.rank_w[rank]
            slot = <Py_ssize_t>(head & SLOT_MASK)
            req = self.s_req[slot]
            self._remove_slot(slot)
            taker.idle = False
            self.n_idle -= 1
            self._set_idle_bit(taker, False)
            made.append((req, taker.uuid))
            if kind == 0:
                if self.classes[cid] is c:
                    head = c.heap[0]
                    heapq.heappush(H, (head >> 24, self.s_req[head & SLOT_MASK], 0, cid, 0, None))
            else:
                w = <_Worker>ow
                if w.idle:
                    self._worker_best(w, &best)
                    if best.cid >= 0:
                        n += 1
                        heapq.heappush(H, (best.key >> 24, self.s_req[best.key & SLOT_MASK],
                                           1, best.cid, n, w))
        return made

    def satisfiable(self, caps, groups):
        """Could any registered worker, in any state, ever serve these?"""
        cdef dict c = dict(caps)
        cdef list bits = []
        cdef list gl = []
        cdef int32_t* cb
        cdef int32_t* cg
        cdef Py_ssize_t i, r
        cdef tuple gs = tuple(groups)
        for k, v in c.items():
            if k == UUID_KEY:
                continue
            b = self.cap_ids.get((k, v))
            if b is None:
                return False
            bits.append(b)
        for g in gs:
            b = self.grp_ids.get(g)
            if b is not None:
                gl.append(b)
        if gs and not gl:
            return False
        if not self.workers:
            return False
        self._ensure_ranks()
        cb = <int32_t*>_realloc(NULL, (len(bits) + 1) * sizeof(int32_t))
        cg = <int32_t*>PyMem_Malloc((len(gl) + 1) * sizeof(int32_t))
        if cg == NULL:
            PyMem_Free(cb)
            raise MemoryError()
        try:
            for i in range(len(bits)):
                cb[i] = <int32_t>bits[i]
            for i in range(len(gl)):
                cg[i] = <int32_t>gl[i]
            if UUID_KEY in c:
                r = self._best_pinned(c[UUID_KEY], cb, len(bits), cg, len(gl), False)
            else:
                r = self._scan(self.all_row, cb, len(bits), cg, len(gl))
            return r >= 0
        finally:
            PyMem_Free(cb)
            PyMem_Free(cg)

    # ================================================================ introspection
    def ready_count(self):
        return self.n_ready

    def idle_count(self):
        return self.n_idle

    def _tune(self, walk_limit, walk_ratio):
        """Tests only: force the per-worker walk (huge, 0) or all classes (-1, 0)."""
        self.walk_limit = walk_limit
        self.walk_ratio = walk_ratio

    def _memory_bytes(self):
        """C memory held for requests (slot arrays, id table, class heaps)."""
        return (self.s_cap * (8 + 8 + 4 + 4) + self.ht_cap * 4 + self.heap_bytes)


def _rank_key(_Worker w):
    return (w.penalty, w.uuid)
