"""optimizer.state: one dict of arrays per parameter, which tells its optimizer when its
entries are replaced or handed out (the compiled plans cache pointers to them)."""


class _ParamState(dict):
    """One parameter's state. The compiled plans cache pointers to its arrays (NOTE: [group
    plan] and NOTE: [pinned storage] in csrc/python/bindings.cpp), so it tells the optimizer
    - when an entry is replaced (the plans are rebuilt), and
    - when user code obtains one of its arrays, through any accessor: that code could re-point
      the array's storage (``v.data = ...``), so the next step re-checks the state's pointers.
    Reading an entry costs one counter increment; in-place changes to the arrays need no
    notice at all."""

    __slots__ = ("_owner",)

    def __init__(self, owner, *args):
        super().__init__(*args)
        self._owner = owner

    def _changed(method):
        def wrapper(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            self._owner._state_changed()
            return result

        wrapper.__name__ = method.__name__
        return wrapper

    def _exposes(method):
        def wrapper(self, *args, **kwargs):
            self._owner._state_exposed()
            return method(self, *args, **kwargs)

        wrapper.__name__ = method.__name__
        return wrapper

    __setitem__ = _changed(dict.__setitem__)
    __delitem__ = _changed(dict.__delitem__)
    clear = _changed(dict.clear)
    pop = _changed(dict.pop)
    popitem = _changed(dict.popitem)
    setdefault = _changed(dict.setdefault)
    update = _changed(dict.update)
    __ior__ = _changed(dict.__ior__)
    # Every way to read the arrays. __iter__ only yields keys, but overriding it makes
    # dict(state) and {**state} read through __getitem__ instead of copying the raw entries.
    __getitem__ = _exposes(dict.__getitem__)
    get = _exposes(dict.get)
    values = _exposes(dict.values)
    items = _exposes(dict.items)
    copy = _exposes(dict.copy)
    __or__ = _exposes(dict.__or__)
    __ror__ = _exposes(dict.__ror__)
    __reduce_ex__ = _exposes(dict.__reduce_ex__)
    __iter__ = dict.__iter__
    del _changed, _exposes


class _OptimizerState(dict):
    """``optimizer.state``: parameter -> its state dict, created empty on first access as in
    torch (a defaultdict(dict))."""

    __slots__ = ("_owner",)

    def __init__(self, owner):
        super().__init__()
        self._owner = owner

    def __missing__(self, param):
        state = _ParamState(self._owner)
        dict.__setitem__(self, param, state)
        return state

    def __setitem__(self, param, value):
        dict.__setitem__(self, param, _ParamState(self._owner, value))
        self._owner._state_changed()

    def __delitem__(self, param):
        dict.__delitem__(self, param)
        self._owner._state_changed()
