// Several Stagely replicas for the browser tests (README, "Running several replicas"): three
// stagely-server processes on one fresh PostgreSQL database, Debian's HAProxy in front with the
// shipped deploy/haproxy.cfg, and a stagely-agent that connects through the balancer. Needs
// TEST_DATABASE_URL (scripts/test.sh sets it); the database is dropped at the end.

import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentBin, freePort, readLog, root, serverBin, siteRoot, waitFor } from './stagely';

const masterKey = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';

export class Cluster {
  private agent: ChildProcess | null = null;
  private readonly replicas: (ChildProcess | null)[] = [null, null, null];

  private constructor(
    readonly url: string,
    readonly dataDir: string,
    readonly agentName: string,
    private readonly database: { admin: string; name: string; url: string },
    private readonly addresses: string[],
    private readonly haproxy: ChildProcess,
  ) {}

  /** HAProxy and a fresh database; no replica runs yet. */
  static async create(agentName: string): Promise<Cluster> {
    const admin = process.env.TEST_DATABASE_URL;
    if (!admin) throw new Error('several replicas need PostgreSQL: set TEST_DATABASE_URL');
    const name = `stagely_e2e_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
    execFileSync('psql', [admin, '-q', '-c', `CREATE DATABASE ${name}`], { stdio: 'ignore' });
    const url = new URL(admin);
    url.pathname = `/${name}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'stagely-e2e-cluster-'));
    const addresses = await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await freePort()}`));
    const balancer = `127.0.0.1:${await freePort()}`;
    const haproxy = spawn('haproxy', ['-db', '-f', join(root, 'deploy/haproxy.cfg')], {
      env: {
        ...process.env,
        STAGELY_LB_BIND: balancer,
        STAGELY_REPLICA_1: addresses[0],
        STAGELY_REPLICA_2: addresses[1],
        STAGELY_REPLICA_3: addresses[2],
      },
      stdio: ['ignore', 'ignore', openSync(join(dataDir, 'haproxy.log'), 'a')],
    });
    let failed: Error | null = null;
    haproxy.once('error', (error) => (failed = error));
    const cluster = new Cluster(`http://${balancer}`, dataDir, agentName, { admin, name, url: url.toString() }, addresses, haproxy);
    try {
      await waitFor(async () => {
        if (failed) throw new Error(`starting haproxy (Debian package haproxy): ${failed}`);
        return (await fetch(`${cluster.url}/healthz`).catch(() => null)) !== null;
      }, 'HAProxy to listen');
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  private env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      DATABASE_URL: this.database.url,
      APP_MASTER_KEY: masterKey,
      STAGELY_PUBLIC_URL: this.url,
      STAGELY_SITE_ROOT: siteRoot,
      STAGELY_DOWNLOADS_DIR: join(root, 'target/downloads'),
      RUST_LOG: 'info',
    };
  }

  private dir(replica: number): string {
    const dir = join(this.dataDir, `r${replica + 1}`);
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** Starts replica `i` (0-based) and waits until HAProxy sends its cookie's requests to it. */
  async start(i: number) {
    const dir = this.dir(i);
    this.replicas[i] = spawn(serverBin, [], {
      env: { ...this.env(), STAGELY_BIND: this.addresses[i], STAGELY_DATA_DIR: dir },
      stdio: ['ignore', 'ignore', openSync(join(dir, 'server.log'), 'a')],
    });
    const name = `r${i + 1}`;
    await waitFor(async () => {
      const answer = await fetch(`${this.url}/healthz`, { headers: { cookie: `stagely_replica=${name}` } }).catch(() => null);
      return answer?.ok === true && answer.headers.get('x-stagely-replica') === name;
    }, `HAProxy to see replica ${name} up`);
  }

  /** Registers the agent with the admin CLI and starts it against the balancer; waits until it
   * is connected. */
  async startAgent() {
    const token = execFileSync(serverBin, ['agents', 'add', this.agentName], {
      env: { ...this.env(), STAGELY_DATA_DIR: this.dataDir },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }).trim();
    this.agent = spawn(agentBin, ['--server', this.url], {
      env: { ...this.env(), STAGELY_DATA_DIR: this.dataDir, STAGELY_AGENT_TOKEN: token },
      stdio: ['ignore', 'ignore', openSync(join(this.dataDir, 'agent.log'), 'a')],
    });
    await waitFor(async () => this.read('agent.log').includes('connected to the server'), 'the agent to connect');
  }

  /** What replica `i` logged. */
  replicaLog(i: number): string {
    return this.read(`r${i + 1}/server.log`);
  }

  private read(name: string): string {
    return readLog(this.dataDir, name);
  }

  logs(): string {
    return ['agent.log', 'haproxy.log', 'r1/server.log', 'r2/server.log', 'r3/server.log']
      .map((name) => `--- ${name}\n${this.read(name)}`)
      .join('\n');
  }

  async stop() {
    const ended = (child: ChildProcess | null, signal: NodeJS.Signals) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise((done) => child.once('exit', done));
      child.kill(signal);
      return exited;
    };
    await ended(this.agent, 'SIGKILL');
    await Promise.all(this.replicas.map((replica) => ended(replica, 'SIGKILL')));
    await ended(this.haproxy, 'SIGKILL');
    execFileSync('psql', [this.database.admin, '-q', '-c', `DROP DATABASE IF EXISTS ${this.database.name} WITH (FORCE)`], { stdio: 'ignore' });
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
