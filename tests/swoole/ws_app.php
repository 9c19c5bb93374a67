<?php
/**
 * A Hyperf-like Swoole WebSocket server (Hyperf's websocket server is a
 * Swoole\WebSocket\Server with the same skeleton settings as http_app.php).
 *
 *   php -d extension=swoole tests/swoole/ws_app.php --port 9503 --name blue \
 *       [--unix /path.sock] [--mode base|process] [--workers 2] [--max-request 100000] \
 *       [--max-wait-time 3] [--log /tmp/ws.log]
 *
 * (or SWOOLE_PORT, SWOOLE_UNIX, ... as for http_app.php).
 *
 *   GET /health         200 "ok" (plain HTTP, onRequest)
 *   GET /connections    {"open": N}: WebSocket connections open now, over all workers
 *   any other path      upgraded to a WebSocket; every message is echoed back, except
 *                       "close-me", which makes the server close that connection
 *                       (close frame 1000 "bye", then TCP close)
 *
 * Open connections are kept in a Swoole\Table shared by the workers (an fd is only
 * unique within one worker in SWOOLE_BASE, so the key is "worker:fd").
 */

declare(strict_types=1);

use Swoole\Http\Request;
use Swoole\Http\Response;
use Swoole\Table;
use Swoole\WebSocket\Frame;
use Swoole\WebSocket\Server;

require __DIR__ . '/common.php';

$o = server_options('9503', 'swoole-ws');
['port' => $port, 'unix' => $unix, 'name' => $name, 'log' => $log] = $o;

$open = new Table(4096);
$open->column('since', Table::TYPE_FLOAT);
$open->create();

$server = make_server(Server::class, $o);
$server->set(skeleton_settings($o));

$key = fn (Server $server, int $fd): string => $server->worker_id . ':' . $fd;

$server->on('workerStart', function (Server $server, int $workerId) use ($log, $name) {
    log_line($log, ['event' => 'worker_start', 'name' => $name, 'worker' => $workerId]);
});
$server->on('workerStop', function (Server $server, int $workerId) use ($log, $name) {
    log_line($log, ['event' => 'worker_stop', 'name' => $name, 'worker' => $workerId]);
});

$server->on('request', function (Request $request, Response $response) use ($open, $name) {
    $response->header('Server', 'Hyperf');
    $response->header('X-Pool', $name);
    $path = $request->server['request_uri'] ?? '';
    if ($path === '/health') {
        $response->end('ok');
    } elseif ($path === '/connections') {
        $response->header('Content-Type', 'application/json');
        $response->end(json_encode(['open' => $open->count()]));
    } else {
        $response->status(404);
        $response->end("not found\n");
    }
});

$server->on('open', function (Server $server, Request $request) use ($open, $key, $log, $name) {
    $open->set($key($server, $request->fd), ['since' => microtime(true)]);
    log_line($log, ['event' => 'ws_open', 'name' => $name, 'worker' => $server->worker_id,
                    'fd' => $request->fd, 'test_id' => $request->header['x-test-id'] ?? null]);
});

$server->on('message', function (Server $server, Frame $frame) {
    if ($frame->data === 'close-me') {
        $server->disconnect($frame->fd, 1000, 'bye');
    } else {
        $server->push($frame->fd, $frame->data, $frame->opcode);
    }
});

$server->on('close', function (Server $server, int $fd) use ($open, $key) {
    $open->del($key($server, $fd));  // HTTP-only connections were never in the table
});

$server->start();
