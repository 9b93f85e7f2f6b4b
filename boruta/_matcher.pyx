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

Fast path (the churn case): when the only change since the last match() is
one worker turning idle, the invariant says no other idle worker serves any
ready request, so the answer is at most one assignment: that worker takes the
best head among the classes it serves. One trie walk, no heap.

Data layout
-----------
* Every `key=value` cap (except `UUID`) and every group is interned to a small
  integer ("bit"). A request cap `UUID=X` pins the request to workers whose
  own caps say `UUID=X` (kept in per-value indexes, not in the bitsets).
  Distinct sorted sets of request groups are interned too ("group sets", id 0
  is the empty set), and so are pinned values while some class uses them.
* Workers are ranked by (penalty, uuid), penalty = len(caps incl. UUID) +
  len(groups) (term caps excluded), the reference's "best worker" order. Inverted bitsets over
  ranks: one row per cap bit, one per group, one of registered workers, one of
  idle workers (`nwords` 64-bit words each). The first set bit of
  idle & AND(cap rows) & OR(group rows) is the best idle worker for a request;
  with the registered row instead of idle it answers `satisfiable()`.
  Ranks are rebuilt lazily (on the next query) after add_worker or a penalty
  change; removals just leave a hole.
* The trie: one node per distinct sorted set of request cap bits (a C array of
  `Node` structs; child per bit, kept as sorted (bit, child) pairs). A node
  knows its full bit set, its unpinned no-group class and its unpinned
  grouped classes as (gid, class id) pairs sorted by gid, and how many
  unpinned classes live in its subtree (empty subtrees are skipped).
* Requests with the same (trie node, group set, pin) form a class, a row of
  C arrays indexed by class id (`ClassRec` + `cl_head`), found through an
  open-addressing table of class ids hashed on that triple. Each class keeps
  its ready requests in a binary min-heap of packed uint64 keys
  (priority-1) << 60 | seq << 24 | slot, ties on (priority, seq) broken by
  request id as the reference does. The heap's root lives in `cl_head[cid]`
  (also what the walk reads), the rest in a small C array allocated only
  when the class holds two requests or more. Empty classes are deleted.
  Unpinned classes hang on their trie node; pinned ones are listed per pin.
* Per-request data lives in C arrays indexed by slot (slots are reused):
  request id (8 B), class id (4 B), heap position (4 B); plus the heap entry
  (8 B, except for a class's head) and a request-id -> slot open-addressing
  table of int32 (load <= 3/4, grown by half). No Python object per request or per class.

Memory follows what is live, not what was ever seen: a cap's bit is
reference-counted by the workers that have it and the trie nodes whose edge it
is; a trie node by the classes on it and its children. When a class empties,
its node and the ancestors nobody else uses are freed, and so are the bits
nobody uses any more; freed node ids and bit numbers are reused (a bit's row is
cleared then). So a request with strange caps costs nothing once it is gone,
however many distinct keys requests have used. (A request's trie path holds
its n caps in n nodes, each with its full bit set: n*n/2 ints, which is why
the core caps the entries per request.) Groups and group sets are still
interned for good: they come from worker groups and owner groups, which
admins set, not from what any caller sends.

Limits: priority 1..16 (4 bits), 0 <= seq < 2**36, at most 2**24 ready
requests at once (slot bits), request ids fit in int64. The handle returned by
`add_request` is `seq << 24 | slot` (a stale handle raises KeyError unless
the same seq was reused). Cap values must be hashable and not None.
"""
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport uint64_t, int64_t, int32_t, uint32_t
from libc.string cimport memset, memmove, memcpy
cimport cython

import heapq

cdef extern from *:
    """
    static inline int boruta_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    /* a well-mixed 64-bit hash -> [0, n), any n (Lemire's multiply-shift) */
    static inline Py_ssize_t boruta_range(unsigned long long h, Py_ssize_t n) {
        return (Py_ssize_t)(((unsigned __int128)h * (unsigned long long)n) >> 64);
    }
    """
    int boruta_ctz64(unsigned long long x) nogil
    Py_ssize_t boruta_range(unsigned long long h, Py_ssize_t n) nogil

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
cdef int32_t FREE_NODE = -2


cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline uint64_t _chash(int32_t node, int32_t gs, int32_t pin) noexcept nogil:
    return _mix(((<uint64_t><uint32_t>node) << 32 | <uint64_t><uint32_t>gs)
                ^ (<uint64_t><uint32_t>(pin + 1) * <uint64_t>0x9e3779b97f4a7c15ULL))


cdef void* _realloc(void* p, size_t n) except NULL:
    cdef void* q = PyMem_Realloc(p, n if n else 1)
    if q == NULL:
        raise MemoryError()
    return q


cdef uint64_t* _grown_rows(uint64_t* rows, Py_ssize_t old_rows, Py_ssize_t new_rows,
                           Py_ssize_t nwords) except NULL:
    """Bitset rows reallocated to `new_rows`, the added rows zeroed."""
    rows = <uint64_t*>_realloc(rows, new_rows * nwords * sizeof(uint64_t))
    memset(rows + old_rows * nwords, 0, (new_rows - old_rows) * nwords * sizeof(uint64_t))
    return rows


cdef inline Py_ssize_t _lower_pair(int32_t* a, Py_ssize_t lo, Py_ssize_t n,
                                   int32_t x) noexcept nogil:
    """First i in [lo, n) with a[2i] >= x (pairs sorted by their first int)."""
    cdef Py_ssize_t hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[2 * mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef struct Node:
    int32_t parent           # free-list link when the node is free
    int32_t bit              # the edge from the parent; FREE_NODE when free
    int32_t live             # unpinned classes in this subtree
    int32_t ncls             # classes (pinned or not) on this very node
    int32_t nogroup          # unpinned class with these caps and no groups, or -1
    int32_t nc               # len(bits)
    int32_t nch
    int32_t chcap
    int32_t ngp
    int32_t gpcap
    int32_t* bits            # the node's sorted cap bits
    int32_t* ch              # (bit, child) pairs sorted by bit
    int32_t* gp              # (gid, class id) pairs sorted by gid


cdef struct ClassRec:
    uint64_t* heap           # heap entries 1..size-1 (entry 0 is cl_head[cid])
    int32_t size             # ready requests
    int32_t cap              # capacity of `heap`
    int32_t node             # trie node of its caps (free-list link when free)
    int32_t gs               # group set id, -1 when the row is free
    int32_t pin              # pin id, -1 when unpinned


cdef struct Best:
    uint64_t key
    Py_ssize_t cid


@cython.no_gc
cdef class _Worker:
    cdef str uuid
    cdef int32_t* cbits      # sorted interned cap bits (UUID excluded)
    cdef int nc
    cdef int32_t* cg         # sorted distinct interned groups
    cdef int ng
    cdef Py_ssize_t penalty
    cdef object uuidcap      # caps["UUID"] or NOPIN
    cdef bint idle
    cdef Py_ssize_t rank

    def __cinit__(self):
        self.cbits = NULL
        self.cg = NULL
        self.nc = 0
        self.ng = 0

    def __dealloc__(self):
        PyMem_Free(self.cbits)
        PyMem_Free(self.cg)


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
    cdef list cap_keys               # bit -> (key, value), or None when free
    cdef list cap_free               # free bit numbers, reused first
    cdef int32_t* cap_refs           # bit -> workers having it + trie edges on it
    cdef dict grp_ids                # group -> gid
    cdef dict uuidcap_idx            # caps["UUID"] value -> list of _Worker
    cdef Py_ssize_t n_idle
    # requests
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
    cdef ClassRec* cls
    cdef uint64_t* cl_head           # cid -> key of the class's best request
    cdef Py_ssize_t cl_cap
    cdef Py_ssize_t cl_used
    cdef int32_t cl_free
    cdef Py_ssize_t n_classes
    cdef int32_t* ct                 # open addressing: class ids by (node, gs, pin)
    cdef Py_ssize_t ct_cap
    cdef Py_ssize_t heap_bytes
    # trie
    cdef Node* nodes
    cdef Py_ssize_t nd_n             # node ids handed out (free ones included)
    cdef Py_ssize_t nd_cap
    cdef int32_t nd_free             # free-list head of node ids, -1 if none
    cdef Py_ssize_t nd_nfree
    cdef Py_ssize_t nd_bytes
    # group sets
    cdef dict gs_ids                 # tuple of sorted distinct gids -> gs id
    cdef int32_t** gs_ptr
    cdef int32_t* gs_len
    cdef Py_ssize_t gs_n
    cdef Py_ssize_t gs_cap
    # pins (values of request caps["UUID"] while some class uses them)
    cdef dict pin_ids                # value -> pin id
    cdef list pin_vals               # pin id -> value or None
    cdef list pin_free
    cdef int32_t** pn_cls            # pin id -> class ids
    cdef int32_t* pn_n
    cdef int32_t* pn_cap
    cdef Py_ssize_t pn_size
    # scratch
    cdef int32_t* tmp
    cdef Py_ssize_t tmp_cap
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
        self.cap_keys = []
        self.cap_free = []
        self.cap_refs = <int32_t*>_realloc(NULL, 16 * sizeof(int32_t))
        self.grp_ids = {}
        self.uuidcap_idx = {}
        self.n_idle = 0
        self.s_cap = 1024
        self.s_req = <int64_t*>_realloc(NULL, self.s_cap * sizeof(int64_t))
        self.s_cls = <int32_t*>_realloc(NULL, self.s_cap * sizeof(int32_t))
        self.s_pos = <int32_t*>_realloc(NULL, self.s_cap * sizeof(int32_t))
        self.s_used = 0
        self.s_free = -1
        self.n_ready = 0
        self.ht_cap = 2048
        self.ht = <int32_t*>_realloc(NULL, self.ht_cap * sizeof(int32_t))
        memset(self.ht, 0xff, self.ht_cap * sizeof(int32_t))
        self.cl_cap = 64
        self.cls = <ClassRec*>_realloc(NULL, self.cl_cap * sizeof(ClassRec))
        self.cl_head = <uint64_t*>_realloc(NULL, self.cl_cap * sizeof(uint64_t))
        self.cl_used = 0
        self.cl_free = -1
        self.n_classes = 0
        self.ct_cap = 128
        self.ct = <int32_t*>_realloc(NULL, self.ct_cap * sizeof(int32_t))
        memset(self.ct, 0xff, self.ct_cap * sizeof(int32_t))
        self.heap_bytes = 0
        self.nd_cap = 64
        self.nodes = <Node*>_realloc(NULL, self.nd_cap * sizeof(Node))
        self.nd_n = 0
        self.nd_free = -1
        self.nd_nfree = 0
        self.nd_bytes = 0
        self._new_node(-1, -1, 0)            # the root
        self.gs_ids = {(): 0}
        self.gs_cap = 16
        self.gs_ptr = <int32_t**>_realloc(NULL, self.gs_cap * sizeof(int32_t*))
        self.gs_len = <int32_t*>_realloc(NULL, self.gs_cap * sizeof(int32_t))
        self.gs_ptr[0] = NULL
        self.gs_len[0] = 0
        self.gs_n = 1
        self.pin_ids = {}
        self.pin_vals = []
        self.pin_free = []
        self.pn_cls = NULL
        self.pn_n = NULL
        self.pn_cap = NULL
        self.pn_size = 0
        self.tmp_cap = 16
        self.tmp = <int32_t*>_realloc(NULL, self.tmp_cap * sizeof(int32_t))
        self.pend_classes = set()
        self.pend_workers = set()
        self.walk_limit = WALK_LIMIT
        self.walk_ratio = WALK_RATIO

    def __dealloc__(self):
        cdef Py_ssize_t i
        PyMem_Free(self.cap_rows)
        PyMem_Free(self.cap_refs)
        PyMem_Free(self.grp_rows)
        PyMem_Free(self.idle_row)
        PyMem_Free(self.all_row)
        PyMem_Free(self.s_req)
        PyMem_Free(self.s_cls)
        PyMem_Free(self.s_pos)
        PyMem_Free(self.ht)
        if self.cls != NULL:
            for i in range(self.cl_used):
                PyMem_Free(self.cls[i].heap)
        PyMem_Free(self.cls)
        PyMem_Free(self.cl_head)
        PyMem_Free(self.ct)
        if self.nodes != NULL:
            for i in range(self.nd_n):
                PyMem_Free(self.nodes[i].bits)
                PyMem_Free(self.nodes[i].ch)
                PyMem_Free(self.nodes[i].gp)
        PyMem_Free(self.nodes)
        if self.gs_ptr != NULL:
            for i in range(self.gs_n):
                PyMem_Free(self.gs_ptr[i])
        PyMem_Free(self.gs_ptr)
        PyMem_Free(self.gs_len)
        if self.pn_cls != NULL:
            for i in range(self.pn_size):
                PyMem_Free(self.pn_cls[i])
        PyMem_Free(self.pn_cls)
        PyMem_Free(self.pn_n)
        PyMem_Free(self.pn_cap)
        PyMem_Free(self.tmp)

    # ================================================================ interning
    cdef Py_ssize_t _intern_cap(self, object kv) except -1:
        """The bit of a `(key, value)` cap; a new one starts with no reference
        (the caller's worker or trie edge takes the first)."""
        cdef object b = self.cap_ids.get(kv)
        cdef Py_ssize_t n, newcap
        if b is not None:
            return b
        if self.cap_free:
            n = self.cap_free.pop()
            memset(self.cap_rows + n * self.nwords, 0, self.nwords * sizeof(uint64_t))
            self.cap_keys[n] = kv
        else:
            n = len(self.cap_keys)
            if n >= self.cap_rows_cap:
                newcap = self.cap_rows_cap * 2
                self.cap_rows = _grown_rows(self.cap_rows, self.cap_rows_cap, newcap, self.nwords)
                self.cap_refs = <int32_t*>_realloc(self.cap_refs, newcap * sizeof(int32_t))
                self.cap_rows_cap = newcap
            self.cap_keys.append(kv)
        self.cap_refs[n] = 0
        self.cap_ids[kv] = n
        return n

    cdef inline void _cap_ref(self, Py_ssize_t bit) noexcept:
        self.cap_refs[bit] += 1

    cdef int _cap_unref(self, Py_ssize_t bit) except -1:
        """Drop one reference; the last one frees the bit for reuse (no worker
        has it any more; `_intern_cap` clears its row when it hands it out again)."""
        self.cap_refs[bit] -= 1
        if self.cap_refs[bit] == 0:
            del self.cap_ids[self.cap_keys[bit]]
            self.cap_keys[bit] = None
            self.cap_free.append(bit)
        return 0

    cdef Py_ssize_t _intern_grp(self, object g) except -1:
        cdef object b = self.grp_ids.get(g)
        cdef Py_ssize_t n, newcap
        if b is not None:
            return b
        n = len(self.grp_ids)
        if n >= self.grp_rows_cap:
            newcap = self.grp_rows_cap * 2
            self.grp_rows = _grown_rows(self.grp_rows, self.grp_rows_cap, newcap, self.nwords)
            self.grp_rows_cap = newcap
        self.grp_ids[g] = n
        return n

    cdef int32_t _intern_gs(self, tuple gids) except -1:
        """Id of a sorted tuple of distinct gids (0 for the empty one)."""
        cdef object o = self.gs_ids.get(gids)
        cdef Py_ssize_t i, n
        cdef int32_t gs
        if o is not None:
            return o
        if self.gs_n >= self.gs_cap:
            self.gs_ptr = <int32_t**>_realloc(self.gs_ptr, 2 * self.gs_cap * sizeof(int32_t*))
            self.gs_len = <int32_t*>_realloc(self.gs_len, 2 * self.gs_cap * sizeof(int32_t))
            self.gs_cap *= 2
        n = len(gids)
        gs = <int32_t>self.gs_n
        self.gs_ptr[gs] = <int32_t*>_realloc(NULL, n * sizeof(int32_t))
        for i in range(n):
            self.gs_ptr[gs][i] = <int32_t>gids[i]
        self.gs_len[gs] = <int32_t>n
        self.gs_n += 1
        self.gs_ids[gids] = gs
        return gs

    # ================================================================ workers
    cdef _Worker _fill_worker(self, _Worker w, object caps, object groups):
        cdef dict c = dict(caps)
        cdef tuple gs = tuple(groups)
        cdef list bits = []
        cdef list gl
        cdef Py_ssize_t i
        cdef Py_ssize_t b
        for k, v in c.items():
            if k == UUID_KEY:
                continue
            b = self._intern_cap((k, v))
            self._cap_ref(b)
            bits.append(b)
        bits.sort()
        gl = sorted({self._intern_grp(g) for g in gs})
        self._release_caps(w)                 # after the new ones hold theirs
        w.cbits = <int32_t*>_realloc(w.cbits, (len(bits) + 1) * sizeof(int32_t))
        w.cg = <int32_t*>_realloc(w.cg, (len(gl) + 1) * sizeof(int32_t))
        for i in range(len(bits)):
            w.cbits[i] = <int32_t>bits[i]
        for i in range(len(gl)):
            w.cg[i] = <int32_t>gl[i]
        w.nc = len(bits)
        w.ng = len(gl)
        # Term caps (boruta.core.capexpr: keys starting with "\x00") are not the
        # worker's own: the least-capable rule counts only its real caps.
        w.penalty = sum(1 for k in c if not (isinstance(k, str) and k.startswith("\x00"))) \
            + len(gs)
        w.uuidcap = c[UUID_KEY] if UUID_KEY in c else NOPIN
        return w

    cdef int _release_caps(self, _Worker w) except -1:
        """Drop w's references on its cap bits (its rows must be cleared already
        or about to be rebuilt)."""
        cdef int j
        for j in range(w.nc):
            self._cap_unref(w.cbits[j])
        w.nc = 0
        return 0

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
        cdef int j
        for j in range(w.nc):
            b = w.cbits[j]
            if on:
                self.cap_rows[b * nw + word] |= m
            else:
                self.cap_rows[b * nw + word] &= ~m
        for j in range(w.ng):
            b = w.cg[j]
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
        self._release_caps(w)

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
        cdef Py_ssize_t n = self.s_cap + (self.s_cap >> 1)
        if n > MAX_SLOTS:
            n = MAX_SLOTS
        if n <= self.s_cap:
            raise OverflowError("too many ready requests in the matcher (limit 2**24)")
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

    cdef inline uint64_t _slot_key(self, Py_ssize_t slot) noexcept nogil:
        cdef int32_t cid = self.s_cls[slot]
        cdef int32_t i = self.s_pos[slot]
        if i == 0:
            return self.cl_head[cid]
        return self.cls[cid].heap[i - 1]

    # request id -> slot: linear probing over int32 slots, -1 = empty
    # (any capacity: homes by multiply-shift, growth by 1.5, load <= 3/4)
    cdef Py_ssize_t _ht_find(self, int64_t req):
        cdef Py_ssize_t cap = self.ht_cap
        cdef Py_ssize_t i = boruta_range(_mix(<uint64_t>req), cap)
        cdef int32_t s
        while True:
            s = self.ht[i]
            if s < 0:
                return -1
            if self.s_req[s] == req:
                return s
            i += 1
            if i == cap:
                i = 0

    cdef void _ht_put(self, Py_ssize_t slot):
        cdef Py_ssize_t cap = self.ht_cap
        cdef Py_ssize_t i = boruta_range(_mix(<uint64_t>self.s_req[slot]), cap)
        while self.ht[i] >= 0:
            i += 1
            if i == cap:
                i = 0
        self.ht[i] = <int32_t>slot

    cdef int _ht_insert(self, Py_ssize_t slot) except -1:
        cdef int32_t* old
        cdef Py_ssize_t oldcap, i
        if (self.n_ready + 1) * 4 > self.ht_cap * 3:
            old = self.ht
            oldcap = self.ht_cap
            self.ht = <int32_t*>PyMem_Malloc((oldcap + (oldcap >> 1)) * sizeof(int32_t))
            if self.ht == NULL:
                self.ht = old
                raise MemoryError()
            self.ht_cap = oldcap + (oldcap >> 1)
            memset(self.ht, 0xff, self.ht_cap * sizeof(int32_t))
            for i in range(oldcap):
                if old[i] >= 0:
                    self._ht_put(old[i])
            PyMem_Free(old)
        self._ht_put(slot)
        return 0

    cdef void _ht_delete(self, Py_ssize_t slot):
        cdef Py_ssize_t cap = self.ht_cap
        cdef int64_t req = self.s_req[slot]
        cdef Py_ssize_t i = boruta_range(_mix(<uint64_t>req), cap)
        cdef Py_ssize_t j, k
        while self.ht[i] != slot:
            i += 1
            if i == cap:
                i = 0
        j = i
        while True:
            j += 1
            if j == cap:
                j = 0
            if self.ht[j] < 0:
                break
            k = boruta_range(_mix(<uint64_t>self.s_req[self.ht[j]]), cap)
            if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
                self.ht[i] = self.ht[j]
                i = j
        self.ht[i] = -1

    # ================================================================ class heaps
    # Entry 0 of class cid's heap is cl_head[cid]; entry i > 0 is cls[cid].heap[i-1].
    cdef inline bint _lt(self, uint64_t a, uint64_t b) noexcept nogil:
        """(priority, seq) order, ties by request id as the reference sorts."""
        if (a >> 24) != (b >> 24):
            return a < b
        return self.s_req[a & SLOT_MASK] < self.s_req[b & SLOT_MASK]

    cdef inline uint64_t _hget(self, Py_ssize_t cid, Py_ssize_t i) noexcept nogil:
        if i == 0:
            return self.cl_head[cid]
        return self.cls[cid].heap[i - 1]

    cdef inline void _hset(self, Py_ssize_t cid, Py_ssize_t i, uint64_t x) noexcept nogil:
        if i == 0:
            self.cl_head[cid] = x
        else:
            self.cls[cid].heap[i - 1] = x
        self.s_pos[x & SLOT_MASK] = <int32_t>i

    cdef void _sift_up(self, Py_ssize_t cid, Py_ssize_t i) noexcept nogil:
        cdef uint64_t x = self._hget(cid, i)
        cdef uint64_t y
        cdef Py_ssize_t p
        while i > 0:
            p = (i - 1) >> 1
            y = self._hget(cid, p)
            if not self._lt(x, y):
                break
            self._hset(cid, i, y)
            i = p
        self._hset(cid, i, x)

    cdef void _sift_down(self, Py_ssize_t cid, Py_ssize_t i) noexcept nogil:
        cdef Py_ssize_t n = self.cls[cid].size
        cdef uint64_t x = self._hget(cid, i)
        cdef uint64_t a, b
        cdef Py_ssize_t ch
        while True:
            ch = 2 * i + 1
            if ch >= n:
                break
            a = self._hget(cid, ch)
            if ch + 1 < n:
                b = self._hget(cid, ch + 1)
                if self._lt(b, a):
                    ch += 1
                    a = b
            if not self._lt(a, x):
                break
            self._hset(cid, i, a)
            i = ch
        self._hset(cid, i, x)

    cdef int _heap_push(self, Py_ssize_t cid, uint64_t key) except -1:
        cdef ClassRec* rec = &self.cls[cid]
        cdef Py_ssize_t n = rec.size, newcap
        if n == 0:
            rec.size = 1
            self._hset(cid, 0, key)
            return 0
        if rec.cap < n:                       # the array holds entries 1..n
            newcap = rec.cap + 2 if rec.cap < 8 else rec.cap + ((rec.cap >> 1) & ~1)
            rec.heap = <uint64_t*>_realloc(rec.heap, newcap * sizeof(uint64_t))
            self.heap_bytes += (newcap - rec.cap) * sizeof(uint64_t)
            rec.cap = <int32_t>newcap
        rec.heap[n - 1] = key
        self.s_pos[key & SLOT_MASK] = <int32_t>n
        rec.size = <int32_t>(n + 1)
        self._sift_up(cid, n)
        return 0

    cdef void _heap_remove(self, Py_ssize_t cid, Py_ssize_t i) noexcept:
        cdef ClassRec* rec = &self.cls[cid]
        cdef Py_ssize_t n = rec.size - 1
        cdef uint64_t last
        if i < n:
            last = self._hget(cid, n)
            rec.size = <int32_t>n
            self._hset(cid, i, last)
            self._sift_down(cid, i)
            self._sift_up(cid, self.s_pos[last & SLOT_MASK])
        else:
            rec.size = <int32_t>n

    # ================================================================ trie
    cdef int32_t _new_node(self, int32_t parent, int32_t bit, Py_ssize_t pos) except -1:
        """A new child of `parent` for `bit`, at `pos` among its children."""
        cdef Node* nd
        cdef Node* pn
        cdef int32_t nid
        cdef Py_ssize_t newcap
        if self.nd_free >= 0:
            nid = self.nd_free
            self.nd_free = self.nodes[nid].parent
            self.nd_nfree -= 1
        else:
            if self.nd_n >= self.nd_cap:
                self.nodes = <Node*>_realloc(self.nodes,
                                             (self.nd_cap + (self.nd_cap >> 1)) * sizeof(Node))
                self.nd_cap += self.nd_cap >> 1
            nid = <int32_t>self.nd_n
            self.nd_n += 1
        nd = &self.nodes[nid]
        memset(nd, 0, sizeof(Node))
        nd.parent = parent
        nd.bit = bit
        nd.nogroup = -1
        if parent < 0:
            return nid
        self._cap_ref(bit)
        pn = &self.nodes[parent]
        nd.nc = pn.nc + 1
        nd.bits = <int32_t*>_realloc(NULL, nd.nc * sizeof(int32_t))
        self.nd_bytes += nd.nc * sizeof(int32_t)
        if pn.nc:
            memcpy(nd.bits, pn.bits, pn.nc * sizeof(int32_t))
        nd.bits[pn.nc] = bit
        if pn.nch >= pn.chcap:
            newcap = pn.chcap * 2 if pn.chcap else 2
            pn.ch = <int32_t*>_realloc(pn.ch, 2 * newcap * sizeof(int32_t))
            self.nd_bytes += 2 * (newcap - pn.chcap) * sizeof(int32_t)
            pn.chcap = <int32_t>newcap
        if pos < pn.nch:
            memmove(pn.ch + 2 * (pos + 1), pn.ch + 2 * pos, 2 * (pn.nch - pos) * sizeof(int32_t))
        pn.ch[2 * pos] = bit
        pn.ch[2 * pos + 1] = nid
        pn.nch += 1
        return nid

    cdef int _release_node(self, int32_t nid) except -1:
        """Free node nid if no class and no child uses it, then its parent likewise."""
        cdef Node* nd
        cdef Node* pn
        cdef int32_t parent
        cdef Py_ssize_t pos
        while nid > 0:
            nd = &self.nodes[nid]
            if nd.ncls or nd.nch:
                return 0
            parent = nd.parent
            pn = &self.nodes[parent]
            pos = _lower_pair(pn.ch, 0, pn.nch, nd.bit)
            pn.nch -= 1
            if pos < pn.nch:
                memmove(pn.ch + 2 * pos, pn.ch + 2 * (pos + 1), 2 * (pn.nch - pos) * sizeof(int32_t))
            self.nd_bytes -= (nd.nc + 2 * nd.chcap + 2 * nd.gpcap) * sizeof(int32_t)
            PyMem_Free(nd.bits)
            PyMem_Free(nd.ch)
            PyMem_Free(nd.gp)
            self._cap_unref(nd.bit)
            memset(nd, 0, sizeof(Node))
            nd.bit = FREE_NODE
            nd.nogroup = -1
            nd.parent = self.nd_free
            self.nd_free = nid
            self.nd_nfree += 1
            nid = parent
        return 0

    cdef int32_t _find_node(self, int32_t* bits, Py_ssize_t nb) except -1:
        """The trie node of these sorted cap bits, created if need be."""
        cdef int32_t nid = 0
        cdef Py_ssize_t j, pos
        cdef Node* nd
        for j in range(nb):
            nd = &self.nodes[nid]
            pos = _lower_pair(nd.ch, 0, nd.nch, bits[j])
            if pos < nd.nch and nd.ch[2 * pos] == bits[j]:
                nid = nd.ch[2 * pos + 1]
            else:
                nid = self._new_node(nid, bits[j], pos)
        return nid

    # ================================================================ classes
    cdef Py_ssize_t _ct_find(self, int32_t node, int32_t gs, int32_t pin) noexcept:
        cdef Py_ssize_t mask = self.ct_cap - 1
        cdef Py_ssize_t i = <Py_ssize_t>(_chash(node, gs, pin) & mask)
        cdef int32_t c
        cdef ClassRec* rec
        while True:
            c = self.ct[i]
            if c < 0:
                return -1
            rec = &self.cls[c]
            if rec.node == node and rec.gs == gs and rec.pin == pin:
                return c
            i = (i + 1) & mask

    cdef inline Py_ssize_t _ct_home(self, int32_t cid, Py_ssize_t mask) noexcept:
        cdef ClassRec* rec = &self.cls[cid]
        return <Py_ssize_t>(_chash(rec.node, rec.gs, rec.pin) & mask)

    cdef void _ct_put(self, int32_t cid) noexcept:
        cdef Py_ssize_t mask = self.ct_cap - 1
        cdef Py_ssize_t i = self._ct_home(cid, mask)
        while self.ct[i] >= 0:
            i = (i + 1) & mask
        self.ct[i] = cid

    cdef int _ct_insert(self, int32_t cid) except -1:
        """Add class cid (n_classes already counts it)."""
        cdef int32_t* old
        cdef Py_ssize_t oldcap, i
        if self.n_classes * 4 > self.ct_cap * 3:
            old = self.ct
            oldcap = self.ct_cap
            self.ct = <int32_t*>PyMem_Malloc(oldcap * 2 * sizeof(int32_t))
            if self.ct == NULL:
                self.ct = old
                raise MemoryError()
            self.ct_cap = oldcap * 2
            memset(self.ct, 0xff, self.ct_cap * sizeof(int32_t))
            for i in range(oldcap):
                if old[i] >= 0:
                    self._ct_put(old[i])
            PyMem_Free(old)
        self._ct_put(cid)
        return 0

    cdef void _ct_delete(self, int32_t cid) noexcept:
        cdef Py_ssize_t mask = self.ct_cap - 1
        cdef Py_ssize_t i = self._ct_home(cid, mask)
        cdef Py_ssize_t j, k
        while self.ct[i] != cid:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self.ct[j] < 0:
                break
            k = self._ct_home(self.ct[j], mask)
            if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
                self.ct[i] = self.ct[j]
                i = j
        self.ct[i] = -1

    cdef int32_t _pin_id(self, object pin) except -1:
        cdef object o = self.pin_ids.get(pin)
        cdef int32_t pid
        cdef Py_ssize_t newsize
        if o is not None:
            return o
        if self.pin_free:
            pid = self.pin_free.pop()
            self.pin_vals[pid] = pin
        else:
            pid = <int32_t>len(self.pin_vals)
            if pid >= self.pn_size:
                newsize = self.pn_size * 2 if self.pn_size else 16
                self.pn_cls = <int32_t**>_realloc(self.pn_cls, newsize * sizeof(int32_t*))
                self.pn_n = <int32_t*>_realloc(self.pn_n, newsize * sizeof(int32_t))
                self.pn_cap = <int32_t*>_realloc(self.pn_cap, newsize * sizeof(int32_t))
                memset(self.pn_cls + self.pn_size, 0, (newsize - self.pn_size) * sizeof(int32_t*))
                memset(self.pn_n + self.pn_size, 0, (newsize - self.pn_size) * sizeof(int32_t))
                memset(self.pn_cap + self.pn_size, 0, (newsize - self.pn_size) * sizeof(int32_t))
                self.pn_size = newsize
            self.pin_vals.append(pin)
        self.pin_ids[pin] = pid
        return pid

    cdef int _class_link(self, int32_t cid) except -1:
        """Hang a new class on its trie node (unpinned) or its pin's list."""
        cdef ClassRec* rec = &self.cls[cid]
        cdef int32_t pid = rec.pin, gs = rec.gs, nid = rec.node
        cdef Node* nd
        cdef Py_ssize_t k, pos, newcap, ng
        cdef int32_t g
        if pid >= 0:
            if self.pn_n[pid] >= self.pn_cap[pid]:
                newcap = self.pn_cap[pid] * 2 if self.pn_cap[pid] else 2
                self.pn_cls[pid] = <int32_t*>_realloc(self.pn_cls[pid], newcap * sizeof(int32_t))
                self.pn_cap[pid] = <int32_t>newcap
            self.pn_cls[pid][self.pn_n[pid]] = cid
            self.pn_n[pid] += 1
            return 0
        nd = &self.nodes[nid]
        ng = self.gs_len[gs]
        if ng == 0:
            nd.nogroup = cid
        else:
            if nd.ngp + ng > nd.gpcap:           # grow by ~1/4: these add up
                newcap = nd.gpcap + (nd.gpcap >> 2) + 2
                if newcap < nd.ngp + ng:
                    newcap = nd.ngp + ng
                nd.gp = <int32_t*>_realloc(nd.gp, 2 * newcap * sizeof(int32_t))
                self.nd_bytes += 2 * (newcap - nd.gpcap) * sizeof(int32_t)
                nd.gpcap = <int32_t>newcap
            for k in range(ng):
                g = self.gs_ptr[gs][k]
                pos = _lower_pair(nd.gp, 0, nd.ngp, g + 1)    # after the run of g
                if pos < nd.ngp:
                    memmove(nd.gp + 2 * (pos + 1), nd.gp + 2 * pos,
                            2 * (nd.ngp - pos) * sizeof(int32_t))
                nd.gp[2 * pos] = g
                nd.gp[2 * pos + 1] = cid
                nd.ngp += 1
        while nid >= 0:
            self.nodes[nid].live += 1
            nid = self.nodes[nid].parent
        return 0

    cdef int _class_unlink(self, int32_t cid) except -1:
        cdef ClassRec* rec = &self.cls[cid]
        cdef int32_t pid = rec.pin, gs = rec.gs, nid = rec.node
        cdef Node* nd
        cdef Py_ssize_t k, pos, ng, n
        cdef int32_t g
        cdef int32_t* arr
        if pid >= 0:
            arr = self.pn_cls[pid]
            n = self.pn_n[pid]
            for k in range(n):
                if arr[k] == cid:
                    arr[k] = arr[n - 1]
                    break
            self.pn_n[pid] = <int32_t>(n - 1)
            if n == 1:
                del self.pin_ids[self.pin_vals[pid]]
                self.pin_vals[pid] = None
                self.pin_free.append(pid)
                PyMem_Free(self.pn_cls[pid])
                self.pn_cls[pid] = NULL
                self.pn_cap[pid] = 0
            return 0
        nd = &self.nodes[nid]
        ng = self.gs_len[gs]
        if ng == 0:
            nd.nogroup = -1
        else:
            for k in range(ng):
                g = self.gs_ptr[gs][k]
                pos = _lower_pair(nd.gp, 0, nd.ngp, g)
                while nd.gp[2 * pos + 1] != cid:
                    pos += 1
                nd.ngp -= 1
                if pos < nd.ngp:
                    memmove(nd.gp + 2 * pos, nd.gp + 2 * (pos + 1),
                            2 * (nd.ngp - pos) * sizeof(int32_t))
        while nid >= 0:
            self.nodes[nid].live -= 1
            nid = self.nodes[nid].parent
        return 0

    cdef Py_ssize_t _get_class(self, int32_t node, int32_t gs, int32_t pin) except -1:
        cdef Py_ssize_t cid = self._ct_find(node, gs, pin)
        cdef Py_ssize_t newcap
        cdef ClassRec* rec
        if cid >= 0:
            return cid
        if self.cl_free >= 0:
            cid = self.cl_free
            self.cl_free = self.cls[cid].node
        else:
            if self.cl_used >= self.cl_cap:
                newcap = self.cl_cap + (self.cl_cap >> 1)
                self.cls = <ClassRec*>_realloc(self.cls, newcap * sizeof(ClassRec))
                self.cl_head = <uint64_t*>_realloc(self.cl_head, newcap * sizeof(uint64_t))
                self.cl_cap = newcap
            cid = self.cl_used
            self.cl_used += 1
        rec = &self.cls[cid]
        rec.heap = NULL
        rec.size = 0
        rec.cap = 0
        rec.node = node
        rec.gs = gs
        rec.pin = pin
        self.nodes[node].ncls += 1
        self.n_classes += 1
        self._ct_insert(<int32_t>cid)
        self._class_link(<int32_t>cid)
        return cid

    cdef int _drop_class(self, int32_t cid) except -1:
        cdef ClassRec* rec
        cdef int32_t node = self.cls[cid].node
        self._ct_delete(cid)
        self._class_unlink(cid)
        self.nodes[node].ncls -= 1
        self._release_node(node)
        rec = &self.cls[cid]
        PyMem_Free(rec.heap)
        self.heap_bytes -= rec.cap * sizeof(uint64_t)
        rec.heap = NULL
        rec.cap = 0
        rec.size = 0
        rec.gs = -1
        rec.pin = -1
        rec.node = self.cl_free
        self.cl_free = cid
        self.n_classes -= 1
        return 0

    # ================================================================ requests
    def add_request(self, req_id, caps, groups, priority, seq):
        cdef int64_t req = req_id
        cdef int64_t prio = priority
        cdef int64_t sq = seq
        cdef dict c
        cdef list bits
        cdef object pin
        cdef int32_t pid = -1, gs, nid
        cdef Py_ssize_t cid, slot, nb, i
        cdef uint64_t key
        if prio < 1 or prio > 16:
            raise ValueError(f"priority {priority} outside 1..16")
        if sq < 0 or sq >= MAX_SEQ:
            raise ValueError(f"seq {seq} outside 0..2**36-1")
        if self._ht_find(req) >= 0:
            raise KeyError(f"request {req_id} already in matcher")
        c = dict(caps)
        bits = []
        for k, v in c.items():
            if k == UUID_KEY:
                continue
            bits.append(self._intern_cap((k, v)))
        bits.sort()
        gs = self._intern_gs(tuple(sorted({self._intern_grp(g) for g in groups})))
        nb = len(bits)
        if nb > self.tmp_cap:
            self.tmp = <int32_t*>_realloc(self.tmp, nb * sizeof(int32_t))
            self.tmp_cap = nb
        for i in range(nb):
            self.tmp[i] = <int32_t>bits[i]
        nid = self._find_node(self.tmp, nb)
        if UUID_KEY in c:
            pid = self._pin_id(c[UUID_KEY])
        cid = self._get_class(nid, gs, pid)
        slot = self._alloc_slot()
        key = (<uint64_t>(prio - 1) << 60) | (<uint64_t>sq << 24) | <uint64_t>slot
        self.s_req[slot] = req
        self.s_cls[slot] = <int32_t>cid
        self._heap_push(cid, key)
        self._ht_insert(slot)
        self.n_ready += 1
        if self.n_idle > 0:
            self.pend_classes.add(cid)
        return <object>(key & LOW60)

    cdef int _remove_slot(self, Py_ssize_t slot) except -1:
        cdef int32_t cid = self.s_cls[slot]
        self._heap_remove(cid, self.s_pos[slot])
        self._ht_delete(slot)
        self._free_slot(slot)
        self.n_ready -= 1
        if self.cls[cid].size == 0:
            self._drop_class(cid)
        return 0

    def remove_request(self, handle):
        cdef Py_ssize_t slot
        if not isinstance(handle, int) or handle < 0 or handle > <object>LOW60:
            raise KeyError(handle)
        slot = <Py_ssize_t>(<uint64_t>handle & SLOT_MASK)
        if (slot >= self.s_used or self.s_cls[slot] < 0
                or (self._slot_key(slot) & LOW60) != <uint64_t>handle):
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

    cdef Py_ssize_t _best_for_class(self, Py_ssize_t cid):
        cdef ClassRec* rec = &self.cls[cid]
        cdef Node* nd = &self.nodes[rec.node]
        if rec.pin >= 0:
            return self._best_pinned(self.pin_vals[rec.pin], nd.bits, nd.nc,
                                     self.gs_ptr[rec.gs], self.gs_len[rec.gs], True)
        return self._scan(self.idle_row, nd.bits, nd.nc, self.gs_ptr[rec.gs], self.gs_len[rec.gs])

    cdef bint _w_serves_class(self, _Worker w, Py_ssize_t cid) noexcept nogil:
        """Do w's own caps and groups serve class cid (ignoring its pin)?"""
        cdef ClassRec* rec = &self.cls[cid]
        cdef Node* nd = &self.nodes[rec.node]
        cdef int i = 0, j = 0, ng = self.gs_len[rec.gs]
        cdef int32_t* cg
        while i < nd.nc:                      # both sorted: subset by merging
            while j < w.nc and w.cbits[j] < nd.bits[i]:
                j += 1
            if j >= w.nc or w.cbits[j] != nd.bits[i]:
                return False
            i += 1
        if ng == 0:
            return True
        cg = self.gs_ptr[rec.gs]
        i = 0
        j = 0
        while i < ng and j < w.ng:
            if cg[i] == w.cg[j]:
                return True
            if cg[i] < w.cg[j]:
                i += 1
            else:
                j += 1
        return False

    cdef inline void _consider(self, Py_ssize_t cid, Best* best) noexcept nogil:
        cdef uint64_t k = self.cl_head[cid]
        if best.cid < 0 or self._lt(k, best.key):
            best.key = k
            best.cid = cid

    cdef void _walk(self, int32_t nid, int32_t* wb, int nb, int i,
                    int32_t* wg, int ng, Best* best) noexcept nogil:
        """Consider the classes of node nid and, for each worker bit from i on
        that is a child of nid, of that child's subtree."""
        cdef Node* nd = &self.nodes[nid]
        cdef int32_t* a
        cdef Py_ssize_t n, lo, k
        cdef int32_t g, child
        cdef int j
        if nd.nogroup >= 0:
            self._consider(nd.nogroup, best)
        n = nd.ngp
        if n:
            a = nd.gp
            lo = 0
            for k in range(ng):
                g = wg[k]
                lo = _lower_pair(a, lo, n, g)
                while lo < n and a[2 * lo] == g:
                    self._consider(a[2 * lo + 1], best)
                    lo += 1
        n = nd.nch
        if n:
            a = nd.ch
            lo = 0
            for j in range(i, nb):
                lo = _lower_pair(a, lo, n, wb[j])
                if lo >= n:
                    break
                if a[2 * lo] == wb[j]:
                    child = a[2 * lo + 1]
                    if self.nodes[child].live > 0:
                        self._walk(child, wb, nb, j + 1, wg, ng, best)
                    lo += 1

    cdef int _worker_best(self, _Worker w, Best* best) except -1:
        """Best head among the classes idle worker w serves."""
        cdef int32_t pid, cid
        cdef Py_ssize_t k
        best.cid = -1
        best.key = 0
        if self.nodes[0].live > 0:
            self._walk(0, w.cbits, w.nc, 0, w.cg, w.ng, best)
        if w.uuidcap is not NOPIN and self.pin_ids:
            opid = self.pin_ids.get(w.uuidcap)
            if opid is not None:
                pid = opid
                for k in range(self.pn_n[pid]):
                    cid = self.pn_cls[pid][k]
                    if self._w_serves_class(w, cid):
                        self._consider(cid, best)
        return 0

    cdef inline tuple _class_entry(self, Py_ssize_t cid):
        cdef uint64_t head = self.cl_head[cid]
        return (head >> 24, self.s_req[head & SLOT_MASK], 0, cid, 0, None)

    # ================================================================ match
    def match(self):
        cdef list made = []
        cdef list H
        cdef list pw
        cdef _Worker w, taker
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
        if (not self.pend_classes and len(self.pend_workers) == 1 and self.walk_limit >= 1
                and self.walk_ratio <= self.n_classes):
            # One worker turned idle and nothing else changed: no other idle
            # worker serves any ready request, so it takes its best, or none.
            w = <_Worker>self.pend_workers.pop()
            if w.idle:
                self._worker_best(w, &best)
                if best.cid >= 0:
                    slot = <Py_ssize_t>(self.cl_head[best.cid] & SLOT_MASK)
                    req = self.s_req[slot]
                    self._remove_slot(slot)
                    w.idle = False
                    self.n_idle -= 1
                    self._set_idle_bit(w, False)
                    made.append((req, w.uuid))
            return made
        pw = [ow for ow in self.pend_workers if (<_Worker>ow).idle]
        H = []
        if len(pw) > self.walk_limit or len(pw) * self.walk_ratio > self.n_classes:
            for cid in range(self.cl_used):
                if self.cls[cid].gs >= 0:
                    H.append(self._class_entry(cid))
        else:
            for ocid in self.pend_classes:
                cid = ocid
                if self.cls[cid].gs >= 0:
                    H.append(self._class_entry(cid))
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
            k60, rq, kind, ocid, _, ow = heapq.heappop(H)
            cid = ocid
            if self.cls[cid].gs < 0:             # emptied during this match
                if kind == 1 and (<_Worker>ow).idle:
                    w = <_Worker>ow
                    self._worker_best(w, &best)
                    if best.cid >= 0:
                        n += 1
                        heapq.heappush(H, (best.key >> 24, self.s_req[best.key & SLOT_MASK],
                                           1, best.cid, n, w))
                continue
            head = self.cl_head[cid]
            if (head >> 24) != <uint64_t>k60 or self.s_req[head & SLOT_MASK] != <int64_t>rq:
                # the head was served: the entry is stale (a lower bound)
                if kind == 0:
                    heapq.heappush(H, self._class_entry(cid))
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
            rank = self._best_for_class(cid)
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
                if self.cls[cid].gs >= 0:
                    heapq.heappush(H, self._class_entry(cid))
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
        """C memory held for requests, classes and the trie (array capacities)."""
        cdef Py_ssize_t i, pins = 0
        for i in range(self.pn_size):
            pins += self.pn_cap[i] * sizeof(int32_t)
        pins += self.pn_size * (sizeof(int32_t*) + 2 * sizeof(int32_t))
        return (self.s_cap * (8 + 4 + 4) + self.ht_cap * 4 + self.heap_bytes
                + self.cl_cap * (sizeof(ClassRec) + sizeof(uint64_t)) + self.ct_cap * 4
                + self.nd_cap * sizeof(Node) + self.nd_bytes + pins)

    def _interned(self):
        """How much interned state is live: cap bits, trie nodes (root included),
        groups, group sets, pinned values. Tests watch these return to where they were."""
        return {"caps": len(self.cap_ids), "nodes": self.nd_n - self.nd_nfree,
                "groups": len(self.grp_ids), "group_sets": self.gs_n,
                "pins": len(self.pin_ids)}

    def _check(self):
        """Tests only: verify the internal structures; raises AssertionError."""
        cdef Py_ssize_t cid, i, n = 0, slot, nid
        cdef ClassRec* rec
        cdef uint64_t x
        cdef _Worker w
        live = [0] * self.nd_n
        ncls = [0] * self.nd_n
        refs = [0] * len(self.cap_keys)
        for ow in self.workers.values():
            w = <_Worker>ow
            for i in range(w.nc):
                refs[w.cbits[i]] += 1
        free_nodes = set()
        nid = self.nd_free
        while nid >= 0:
            assert self.nodes[nid].bit == FREE_NODE and nid not in free_nodes, nid
            free_nodes.add(nid)
            nid = self.nodes[nid].parent
        assert len(free_nodes) == self.nd_nfree
        for nid in range(1, self.nd_n):
            if nid in free_nodes:
                continue
            refs[self.nodes[nid].bit] += 1
            assert self.nodes[self.nodes[nid].parent].bit != FREE_NODE, nid
        for i in range(len(self.cap_keys)):
            kv = self.cap_keys[i]
            assert (kv is None) == (refs[i] == 0) == (i in self.cap_free), (i, kv, refs[i])
            assert kv is None or (self.cap_ids[kv] == i and self.cap_refs[i] == refs[i]), (i, kv)
        assert len(self.cap_ids) + len(self.cap_free) == len(self.cap_keys)
        for cid in range(self.cl_used):
            rec = &self.cls[cid]
            if rec.gs < 0:
                continue
            n += 1
            assert rec.size > 0, cid
            assert self._ct_find(rec.node, rec.gs, rec.pin) == cid, cid
            for i in range(rec.size):
                x = self._hget(cid, i)
                slot = <Py_ssize_t>(x & SLOT_MASK)
                assert self.s_cls[slot] == cid and self.s_pos[slot] == i, (cid, i)
                if i:
                    assert not self._lt(x, self._hget(cid, (i - 1) >> 1)), (cid, i)
            assert rec.node not in free_nodes, cid
            ncls[rec.node] += 1
            if rec.pin < 0:
                nid = rec.node
                while nid >= 0:
                    live[nid] += 1
                    nid = self.nodes[nid].parent
        assert n == self.n_classes
        for nid in range(self.nd_n):
            if nid in free_nodes:
                continue
            assert live[nid] == self.nodes[nid].live, nid
            assert ncls[nid] == self.nodes[nid].ncls, nid
            # a node lives while a class or a child uses it (the root always)
            assert nid == 0 or ncls[nid] or self.nodes[nid].nch, nid
        return True


    # ================================================================ explain: candidates, count_ahead
    # Why a request waits: which workers could ever serve it, and how many ready
    # requests those workers will serve first. Read-only; nothing here changes state.
    cdef int _query(self, object caps, object groups, list bits, list gl) except -1:
        """Interns nothing: 1 and the bits/gids of these caps and groups, or 0 when
        no registered worker can serve them (an unknown cap, only unknown groups)."""
        cdef tuple gs = tuple(groups)
        for k, v in dict(caps).items():
            if k == UUID_KEY:
                continue
            b = self.cap_ids.get((k, v))
            if b is None:
                return 0
            bits.append(b)
        for g in gs:
            b = self.grp_ids.get(g)
            if b is not None:
                gl.append(b)
        if (gs and not gl) or not self.workers:
            return 0
        self._ensure_ranks()
        return 1

    cdef inline uint64_t _word(self, uint64_t x, Py_ssize_t wi, int32_t* cb, int nc,
                               int32_t* cg, int ng) noexcept nogil:
        """x (word wi of some row) & AND(cap rows) & OR(group rows), word wi."""
        cdef Py_ssize_t nw = self.nwords
        cdef uint64_t y
        cdef int j
        for j in range(nc):
            if x == 0:
                return 0
            x &= self.cap_rows[cb[j] * nw + wi]
        if ng and x:
            y = 0
            for j in range(ng):
                y |= self.grp_rows[cg[j] * nw + wi]
            x &= y
        return x

    def candidates(self, caps, groups):
        """UUIDs of every registered worker (any state) serving these, sorted."""
        cdef list bits = []
        cdef list gl = []
        cdef list out = []
        cdef int32_t* cb
        cdef int32_t* cg
        cdef Py_ssize_t i, wi, nb, ng
        cdef uint64_t x
        cdef _Worker w
        cdef dict c = dict(caps)
        if not self._query(c, groups, bits, gl):
            return out
        nb = len(bits)
        ng = len(gl)
        cb = <int32_t*>_realloc(NULL, (nb + ng + 1) * sizeof(int32_t))
        cg = cb + nb
        try:
            for i in range(nb):
                cb[i] = <int32_t>bits[i]
            for i in range(ng):
                cg[i] = <int32_t>gl[i]
            if UUID_KEY in c:
                for ow in self.uuidcap_idx.get(c[UUID_KEY], ()):
                    w = <_Worker>ow
                    if self._worker_serves(w, cb, nb, cg, ng):
                        out.append(w.uuid)
            else:
                for wi in range(self.nwords):
                    x = self._word(self.all_row[wi], wi, cb, nb, cg, ng)
                    while x:
                        out.append((<_Worker>self.rank_w[(wi << 6) + boruta_ctz64(x)]).uuid)
                        x &= x - 1
        finally:
            PyMem_Free(cb)
        out.sort()
        return out

    cdef Py_ssize_t _count_below(self, Py_ssize_t cid, Py_ssize_t i, uint64_t lim) noexcept nogil:
        """Heap entries at i and below whose (priority, seq) is before lim (a key >> 24).
        A min-heap: below an entry that is not before lim, nothing is."""
        if i >= self.cls[cid].size or (self._hget(cid, i) >> 24) >= lim:
            return 0
        return 1 + self._count_below(cid, 2 * i + 1, lim) + self._count_below(cid, 2 * i + 2, lim)

    cdef Py_ssize_t _count_trie(self, int32_t nid, uint64_t* acc, Py_ssize_t depth,
                                char* inunion, int32_t* nzw, Py_ssize_t nnz,
                                uint64_t lim) noexcept nogil:
        """Requests before lim in the unpinned classes of nid's subtree that a candidate
        serves. acc + depth*nnz holds, for each candidate word, the candidates having
        every cap of nid; a child's row is its parent's & the edge's cap row, and a
        subtree no candidate has the caps of is skipped."""
        cdef Node* nd = &self.nodes[nid]
        cdef uint64_t* mine = acc + depth * nnz
        cdef uint64_t* below = mine + nnz
        cdef Py_ssize_t total = 0, k, j, nw = self.nwords
        cdef int32_t cid, child, bit, gs
        cdef uint64_t any_, y
        if nd.nogroup >= 0:
            total += self._count_below(nd.nogroup, 0, lim)   # mine is not empty here
        for k in range(nd.ngp):
            cid = nd.gp[2 * k + 1]
            gs = self.cls[cid].gs
            # a class is listed once per group: count it at its first one
            if nd.gp[2 * k] != self.gs_ptr[gs][0]:
                continue
            for j in range(nnz):
                y = 0
                for bit in range(self.gs_len[gs]):
                    y |= self.grp_rows[self.gs_ptr[gs][bit] * nw + nzw[j]]
                if mine[j] & y:
                    total += self._count_below(cid, 0, lim)
                    break
        for k in range(nd.nch):
            bit = nd.ch[2 * k]
            child = nd.ch[2 * k + 1]
            if not inunion[bit] or self.nodes[child].live <= 0:
                continue
            any_ = 0
            for j in range(nnz):
                below[j] = mine[j] & self.cap_rows[bit * nw + nzw[j]]
                any_ |= below[j]
            if any_:
                total += self._count_trie(child, acc, depth + 1, inunion, nzw, nnz, lim)
        return total

    def count_ahead(self, priority, seq, candidate_uuids):
        """Ready requests before (priority, seq) that some of these workers serve."""
        cdef int64_t prio = priority
        cdef int64_t sq = seq
        cdef uint64_t lim
        cdef uint64_t* cand
        cdef int32_t* nzw
        cdef char* inunion
        cdef Py_ssize_t nnz = 0, total = 0, wi, k, nbits, depth
        cdef uint64_t* acc
        cdef int32_t pid, cid
        cdef Node* nd
        cdef _Worker w, pw
        if prio < 1 or prio > 16:
            raise ValueError(f"priority {priority} outside 1..16")
        if sq < 0 or sq >= MAX_SEQ:
            raise ValueError(f"seq {seq} outside 0..2**36-1")
        lim = (<uint64_t>(prio - 1) << 36) | <uint64_t>sq
        ws = [self.workers[u] for u in candidate_uuids if u in self.workers]
        if not ws or self.n_ready == 0:
            return 0
        self._ensure_ranks()
        nbits = len(self.cap_keys)
        cand = <uint64_t*>_realloc(NULL, self.nwords * sizeof(uint64_t))
        nzw = <int32_t*>PyMem_Malloc(self.nwords * sizeof(int32_t) + 1)
        inunion = <char*>PyMem_Malloc(nbits + 1)
        if nzw == NULL or inunion == NULL:
            PyMem_Free(cand)
            PyMem_Free(nzw)
            PyMem_Free(inunion)
            raise MemoryError()
        try:
            memset(cand, 0, self.nwords * sizeof(uint64_t))
            memset(inunion, 0, nbits + 1)
            pins = set()
            for ow in ws:
                w = <_Worker>ow
                cand[w.rank >> 6] |= (<uint64_t>1) << (w.rank & 63)
                for k in range(w.nc):
                    inunion[w.cbits[k]] = 1
                if w.uuidcap is not NOPIN:
                    pins.add(w.uuidcap)
            for wi in range(self.nwords):
                if cand[wi]:
                    nzw[nnz] = <int32_t>wi
                    nnz += 1
            if self.nodes[0].live > 0:
                depth = 1
                for k in range(self.nd_n):
                    if self.nodes[k].bit != FREE_NODE and self.nodes[k].nc + 1 > depth:
                        depth = self.nodes[k].nc + 1
                acc = <uint64_t*>_realloc(NULL, depth * (nnz + 1) * sizeof(uint64_t))
                try:
                    for k in range(nnz):
                        acc[k] = cand[nzw[k]]
                    total = self._count_trie(0, acc, 0, inunion, nzw, nnz, lim)
                finally:
                    PyMem_Free(acc)
            for pin in pins:                       # pinned classes: their pin's candidates
                opid = self.pin_ids.get(pin)
                if opid is None:
                    continue
                pid = opid
                for k in range(self.pn_n[pid]):
                    cid = self.pn_cls[pid][k]
                    nd = &self.nodes[self.cls[cid].node]
                    for opw in self.uuidcap_idx.get(pin, ()):
                        pw = <_Worker>opw
                        if ((cand[pw.rank >> 6] >> (pw.rank & 63)) & 1 and self._worker_serves(
                                pw, nd.bits, nd.nc, self.gs_ptr[self.cls[cid].gs],
                                self.gs_len[self.cls[cid].gs])):
                            total += self._count_below(cid, 0, lim)
                            break
        finally:
            PyMem_Free(cand)
            PyMem_Free(nzw)
            PyMem_Free(inunion)
        return total


def _rank_key(_Worker w):
    return (w.penalty, w.uuid)

