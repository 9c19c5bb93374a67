<?php
/**
 * A Hyperf-like Swoole HTTP server: the upstream the proxy's users run.
 *
 * The settings are those of the Hyperf 3 skeleton (config/autoload/server.php):
 * SWOOLE_BASE, coroutines on, TCP_NODELAY, 2 MB socket and output buffers,
 * max_request 100000; package_max_length and max_wait_time stay at Swoole's
 * defaults (2 MB, 3 s). Hooks are on (SWOOLE_HOOK_ALL), as Hyperf's bin/hyperf.php
 * sets them, so file writes and sleeps yield like they do in a real app.
 *
 *   php -d extension=swoole tests/swoole/http_app.php --port 9501 --name blue \
 *       [--unix /path.sock] [--mode base|process] [--workers 2] [--max-request 100000] \
 *       [--max-wait-time 3] [--log /tmp/applied.log]
 *
 * Every option can also come from the environment: SWOOLE_PORT, SWOOLE_UNIX, SWOOLE_MODE,
 * SWOOLE_WORKERS, SWOOLE_MAX_REQUEST, SWOOLE_MAX_WAIT_TIME, SWOOLE_NAME, SWOOLE_LOG.
 *
 * Routes:
 *   GET  /health        200 "ok"
 *   GET  /              a small body
 *   POST /write         appends one "applied" line to the log, then answers 200
 *   GET  /write         the same (Hyperf apps often have GET routes that write)
 *   GET  /slow?ms=N     logs "started", sleeps N ms (coroutine), logs "applied", answers
 *   GET  /sse           a streamed (chunked) response: several events, short sleeps between
 *   POST /echo          {"length": body length, "sha256": hash of the body}
 *   GET  /status/204    204, no body
 *
 * The log is one JSON object per line, each written by one
 * file_put_contents(FILE_APPEND | LOCK_EX), so lines from several workers and processes
 * never interleave. Request lines carry event (applied|started), pid, worker, method, path,
 * test_id (X-Test-Id), idempotency_key, cookie (as received) and the server name;
 * server_start / worker_start / worker_stop / worker_error / shutdown lines let a test see
 * that Swoole recycled a worker. There is deliberately no onWorkerExit line: Swoole calls
 * onWorkerExit while the stopping worker's reactor winds down, and a hooked file write
 * there never completed (the worker hung until the manager killed it).
 */

declare(strict_types=1);

use Swoole\Coroutine;
use Swoole\Http\Request;
use Swoole\Http\Response;
use Swoole\Http\Server;

require __DIR__ . '/common.php';

$o = server_options('9501', 'swoole');
['port' => $port, 'unix' => $unix, 'name' => $name, 'log' => $log] = $o;

/** What the app records about a request it ran: who ran it and what it was sent. */
function request_fields(Server $server, Request $request, string $event, string $name): array
{
    return [
        'event' => $event,
        'name' => $name,
        'pid' => getmypid(),
        'worker' => $server->worker_id,
        'method' => $request->server['request_method'] ?? '',
        'path' => $request->server['request_uri'] ?? '',
        'test_id' => $request->header['x-test-id'] ?? null,
        'idempotency_key' => $request->header['idempotency-key'] ?? null,
        'cookie' => raw_cookie($request),
    ];
}

/**
 * The Cookie header exactly as received. Swoole parses it into $request->cookie and drops
 * it from $request->header, so it is read from the raw request head (several Cookie
 * lines are joined with "; ", the way HTTP/2 rejoins a split cookie, RFC 9113 §8.2.3).
 */
function raw_cookie(Request $request): ?string
{
    [$head] = explode("\r\n\r\n", (string) $request->getData(), 2);
    $values = [];
    foreach (explode("\r\n", $head) as $line) {
        if (stripos($line, 'cookie:') === 0) {
            $values[] = trim(substr($line, 7));
        }
    }
    return $values ? implode('; ', $values) : null;
}

/** SWOOLE_HOOK_ALL, less the curl hooks when ext-curl is absent (Swoole warns otherwise). */
function hook_flags(): int
{
    $flags = SWOOLE_HOOK_ALL;
    if (!extension_loaded('curl')) {
        foreach (['SWOOLE_HOOK_CURL', 'SWOOLE_HOOK_NATIVE_CURL'] as $hook) {
            $flags &= defined($hook) ? ~constant($hook) : ~0;
        }
    }
    return $flags;
}

$server = make_server(Server::class, $o);
$server->set(skeleton_settings($o) + [
    'open_http2_protocol' => true,  // the skeleton's HTTP server has it on
    'hook_flags' => hook_flags(),   // bin/hyperf.php: SWOOLE_HOOK_ALL
]);

$server->on('start', function (Server $server) use ($log, $name, $port, $unix) {
    log_line($log, ['event' => 'server_start', 'name' => $name,
                    'listen' => $unix !== '' ? "unix:$unix" : "127.0.0.1:$port"]);
});
$server->on('shutdown', function (Server $server) use ($log, $name) {
    log_line($log, ['event' => 'shutdown', 'name' => $name]);
});
$server->on('workerStart', function (Server $server, int $workerId) use ($log, $name) {
    log_line($log, ['event' => 'worker_start', 'name' => $name, 'worker' => $workerId]);
});
$server->on('workerStop', function (Server $server, int $workerId) use ($log, $name) {
    log_line($log, ['event' => 'worker_stop', 'name' => $name, 'worker' => $workerId]);
});
$server->on('workerError', function (Server $server, int $workerId, int $workerPid, int $exitCode,
                                     int $signal) use ($log, $name) {
    log_line($log, ['event' => 'worker_error', 'name' => $name, 'worker' => $workerId,
                    'worker_pid' => $workerPid, 'exit_code' => $exitCode, 'signal' => $signal]);
});

$server->on('request', function (Request $request, Response $response) use ($server, $log, $name) {
    $response->header('Server', 'Hyperf');
    $response->header('X-Pool', $name);
    $method = $request->server['request_method'] ?? '';
    $path = $request->server['request_uri'] ?? '';

    if ($path === '/health' && $method === 'GET') {
        $response->end('ok');
    } elseif ($path === '/' && $method === 'GET') {
        $response->header('Content-Type', 'text/plain');
        $response->end("hello from $name\n");
    } elseif ($path === '/write' && ($method === 'POST' || $method === 'GET')) {
        log_line($log, request_fields($server, $request, 'applied', $name));
        $response->header('Content-Type', 'application/json');
        $response->end(json_encode(['applied' => $request->header['x-test-id'] ?? null]));
    } elseif ($path === '/slow' && $method === 'GET') {
        $ms = (int) ($request->get['ms'] ?? 100);
        log_line($log, request_fields($server, $request, 'started', $name));
        Coroutine::sleep($ms / 1000);
        log_line($log, request_fields($server, $request, 'applied', $name));
        $response->end("slept {$ms}ms\n");
    } elseif ($path === '/sse' && $method === 'GET') {
        $response->header('Content-Type', 'text/event-stream');
        $response->header('Cache-Control', 'no-cache');
        for ($i = 1; $i <= 5; $i++) {
            $response->write("id: $i\ndata: event $i from $name\n\n");
            Coroutine::sleep(0.02);
        }
        $response->end();
    } elseif ($path === '/echo' && $method === 'POST') {
        $body = (string) $request->getContent();
        $response->header('Content-Type', 'application/json');
        $response->end(json_encode(['length' => strlen($body), 'sha256' => hash('sha256', $body)]));
    } elseif ($path === '/status/204') {
        $response->status(204);
        $response->end();
    } else {
        $response->status(404);
        $response->end("not found\n");
    }
});

$server->start();
