<?php
/**
 * What http_app.php and ws_app.php share: their command line (or SWOOLE_* env)
 * and the Hyperf 3 skeleton's server settings (config/autoload/server.php).
 */

declare(strict_types=1);

function option(array $cli, string $name, string $env, string $default): string
{
    if (isset($cli[$name]) && $cli[$name] !== false) {
        return (string) $cli[$name];
    }
    $value = getenv($env);
    return $value === false || $value === '' ? $default : $value;
}

/** port, unix, mode, workers, max_request, max_wait_time, name, log: from argv or env. */
function server_options(string $defaultPort, string $logPrefix): array
{
    $cli = getopt('', ['port:', 'unix:', 'mode:', 'workers:', 'max-request:', 'max-wait-time:',
                       'name:', 'log:']);
    $name = option($cli, 'name', 'SWOOLE_NAME', 'blue');
    $o = [
        'port' => (int) option($cli, 'port', 'SWOOLE_PORT', $defaultPort),
        'unix' => option($cli, 'unix', 'SWOOLE_UNIX', ''),
        'mode' => option($cli, 'mode', 'SWOOLE_MODE', 'base'),
        'workers' => (int) option($cli, 'workers', 'SWOOLE_WORKERS', '2'),
        'max_request' => (int) option($cli, 'max-request', 'SWOOLE_MAX_REQUEST', '100000'),
        'max_wait_time' => (int) option($cli, 'max-wait-time', 'SWOOLE_MAX_WAIT_TIME', '3'),
        'name' => $name,
        'log' => option($cli, 'log', 'SWOOLE_LOG', sys_get_temp_dir() . "/$logPrefix-$name.log"),
    ];
    if (!in_array($o['mode'], ['base', 'process'], true)) {
        fwrite(STDERR, "--mode must be base or process, not {$o['mode']}\n");
        exit(2);
    }
    return $o;
}

/** A server of class $class (Http or WebSocket) on the port or Unix socket of $o. */
function make_server(string $class, array $o)
{
    $mode = $o['mode'] === 'base' ? SWOOLE_BASE : SWOOLE_PROCESS;
    return $o['unix'] !== ''
        ? new $class($o['unix'], 0, $mode, SWOOLE_SOCK_UNIX_STREAM)
        : new $class('127.0.0.1', $o['port'], $mode);
}

/** The Hyperf 3 skeleton's settings, plus Swoole's defaults that decide how a
 * stopping worker treats requests, spelled out. */
function skeleton_settings(array $o): array
{
    return [
        'enable_coroutine' => true,
        'worker_num' => $o['workers'],
        'open_tcp_nodelay' => true,
        'max_coroutine' => 100000,
        'max_request' => $o['max_request'],
        'socket_buffer_size' => 2 * 1024 * 1024,
        'buffer_output_size' => 2 * 1024 * 1024,
        'package_max_length' => 2 * 1024 * 1024,
        'max_wait_time' => $o['max_wait_time'],
        'pid_file' => '',
    ];
}

/** One JSON line appended atomically (LOCK_EX) to the applied log. */
function log_line(string $path, array $fields): void
{
    $fields += ['pid' => getmypid(), 't' => microtime(true)];
    file_put_contents($path, json_encode($fields, JSON_UNESCAPED_SLASHES) . "\n",
                      FILE_APPEND | LOCK_EX);
}
