# bomarun's Ansible callback plugin: one JSON object per line per event,
# appended to the file named by $BOMARUN_ANSIBLE_EVENTS.  bomarun.ansible
# enables it (ANSIBLE_CALLBACKS_ENABLED=bomarun, ANSIBLE_CALLBACK_PLUGINS)
# and tails the file while ansible-playbook runs; the stdout callback is left
# alone, so what an operator sees in the raw output is unchanged.
#
# Events (field "event"):
#   start        {playbook}
#   play         {play, hosts}
#   result       {host, task, status, duration, msg, play, action, changed,
#                 ignored, rc, stdout, stderr, delegated_to, handler, items,
#                 failed_items}          status: ok|changed|failed|unreachable|skipped
#   no_hosts     {play}
#   stats        {recap = {host = {ok, changed, failed, unreachable, skipped,
#                                  rescued, ignored}}}
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = '''
    name: bomarun
    type: notification
    short_description: structured per-task, per-host events for bomarun
    description:
      - Writes one JSON object per line for every task result and the play
        recap to the file named by BOMARUN_ANSIBLE_EVENTS.
    requirements:
      - enabled by bomarun.ansible
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase

try:
    from ansible.module_utils.common.json import AnsibleJSONEncoder as _Encoder
except ImportError:  # pragma: no cover - older ansible
    _Encoder = json.JSONEncoder

try:
    from ansible.playbook.handler import Handler as _Handler
except ImportError:  # pragma: no cover
    _Handler = None

TEXT_LIMIT = 4096


def _text(v, limit=TEXT_LIMIT):
    if v is None:
        return None
    if not isinstance(v, str):
        try:
            v = json.dumps(v, cls=_Encoder, ensure_ascii=False, sort_keys=True)
        except Exception:
            v = str(v)
    if len(v) > limit:
        v = v[:limit // 2] + "\n...[%d characters cut]...\n" % (len(v) - limit) + v[-limit // 2:]
    return v


def _message(r, status):
    """The one message that says what happened, as a person would quote it."""
    msg = r.get('msg')
    if status == 'skipped':
        return _text(msg or r.get('skip_reason') or r.get('false_condition'))
    if status in ('failed', 'unreachable'):
        parts = []
        if msg:
            parts.append(_text(msg))
        rc = r.get('rc')
        stderr = (r.get('stderr') or '').strip()
        if rc not in (None, 0) and (not msg or msg == 'non-zero return code'):
            parts = ['non-zero return code %s' % rc]
            if stderr:
                parts.append(stderr)
        elif stderr and not msg:
            parts.append(stderr)
        for k in ('module_stderr', 'exception'):
            if not parts and r.get(k):
                parts.append(_text(r[k]))
        # A loop: name the first failed item's message.
        for item in r.get('results') or []:
            if isinstance(item, dict) and item.get('failed'):
                m = _message(item, 'failed')
                if m:
                    parts.append('item %s: %s' % (_text(item.get('item'), 200), m))
                break
        return _text(': '.join(p for p in parts if p)) or None
    if msg is not None and msg != '':
        return _text(msg)
    return None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'bomarun'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display=display)
        self._path = os.environ.get('BOMARUN_ANSIBLE_EVENTS')
        self._fd = None
        if self._path:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._play = None
        self._task_start = {}
        self._host_start = {}

    def _emit(self, obj):
        if self._fd is None:
            return
        obj = dict((k, v) for k, v in obj.items() if v is not None)
        obj['time'] = time.time()
        try:
            line = json.dumps(obj, cls=_Encoder, ensure_ascii=False, sort_keys=True)
        except Exception:
            line = json.dumps(obj, default=str, ensure_ascii=False, sort_keys=True)
        data = (line + '\n').encode('utf-8', 'surrogateescape')
        # One write per line (O_APPEND): a reader never sees half a line
        # followed by another event.
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    # -- playbook structure ------------------------------------------------

    def v2_playbook_on_start(self, playbook):
        self._emit({'event': 'start', 'playbook': getattr(playbook, '_file_name', None)})

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()
        hosts = play.hosts
        if isinstance(hosts, (list, tuple)):
            hosts = ','.join(str(h) for h in hosts)
        self._emit({'event': 'play', 'play': self._play, 'hosts': _text(hosts, 400)})

    def v2_playbook_on_no_hosts_matched(self):
        self._emit({'event': 'no_hosts', 'play': self._play})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start[task._uuid] = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start[task._uuid] = time.time()

    def v2_runner_on_start(self, host, task):
        self._host_start[(host.get_name(), task._uuid)] = time.time()

    # -- results -----------------------------------------------------------

    def _result(self, result, status, ignored=False):
        r = result._result or {}
        task = result._task
        host = result._host.get_name()
        key = (host, task._uuid)
        t0 = self._host_start.pop(key, None) or self._task_start.get(task._uuid)
        if status == 'ok' and r.get('changed'):
            status = 'changed'
        delegated = (r.get('_ansible_delegated_vars') or {}).get('ansible_host')
        ev = {
            'event': 'result',
            'status': status,
            'host': host,
            'task': task.get_name(),
            'action': task.action,
            'play': self._play,
            'duration': round(time.time() - t0, 4) if t0 else None,
            'msg': _message(r, status),
            'changed': bool(r.get('changed', False)),
            'ignored': True if ignored else None,
            'handler': True if _Handler is not None and isinstance(task, _Handler) else None,
            'delegated_to': delegated if delegated and delegated != host else None,
        }
        if r.get('rc') is not None:
            ev['rc'] = r.get('rc')
        if status in ('failed', 'unreachable') or r.get('rc') is not None:
            ev['stdout'] = _text(r.get('stdout')) or None
            ev['stderr'] = _text(r.get('stderr')) or None
        items = r.get('results')
        if isinstance(items, list) and items and isinstance(items[0], dict):
            ev['items'] = len(items)
            ev['failed_items'] = sum(1 for i in items if isinstance(i, dict) and i.get('failed')) or None
        self._emit(ev)

    def v2_runner_on_ok(self, result):
        self._result(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'failed', ignored=ignore_errors)

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')

    def v2_runner_on_skipped(self, result):
        self._result(result, 'skipped')

    def v2_runner_on_async_failed(self, result):
        self._result(result, 'failed')

    # -- the recap ---------------------------------------------------------

    def v2_playbook_on_stats(self, stats):
        recap = {}
        for h in sorted(stats.processed.keys()):
            s = stats.summarize(h)
            recap[h] = {
                'ok': s.get('ok', 0),
                'changed': s.get('changed', 0),
                'failed': s.get('failures', 0),
                'unreachable': s.get('unreachable', 0),
                'skipped': s.get('skipped', 0),
                'rescued': s.get('rescued', 0),
                'ignored': s.get('ignored', 0),
            }
        self._emit({'event': 'stats', 'recap': recap})
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
